//! The HTTP server: one handler that routes like ComfyUI's aiohttp app (every route also under
//! `/api`, 404 for unknown paths, 405 with `Allow` for known paths and wrong methods) after
//! waiting out any GC-like stall.

mod files;
mod info;
mod jobs;
mod prompt;
mod queue;
mod respond;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::response::Response;

use crate::config::Protocol;
use crate::shared::Shared;

/// Bodies larger than ComfyUI's `max_upload_size` are refused.
const MAX_BODY: usize = 100 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Ws,
    Index,
    Embeddings,
    Models,
    ModelFolder(String),
    Extensions,
    UploadImage,
    View,
    SystemStats,
    Features,
    Prompt,
    ObjectInfo,
    ObjectInfoClass(String),
    History,
    HistoryId(String),
    Queue,
    Interrupt,
    Free,
    /// `/api/jobs` (2026 only, and only under `/api`).
    Jobs,
    /// `/api/jobs/{id}`; a POST to `/api/jobs/cancel` is the batch cancel.
    Job(String),
    /// `/api/jobs/{id}/cancel`.
    JobCancel(String),
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const GET_POST: &[&str] = &["GET", "POST"];

fn route(path: &str, protocol: Protocol) -> Option<(Route, &'static [&'static str])> {
    let (api, path) = match path.strip_prefix("/api") {
        Some(rest) if rest.starts_with('/') => (true, rest),
        _ => (false, path),
    };
    // NEWER.md: the jobs API exists from v0.6.0, only under the `/api/` prefix.
    let jobs = api && protocol == Protocol::Y2026;
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    Some(match segments.as_slice() {
        [""] => (Route::Index, GET),
        ["ws"] => (Route::Ws, GET),
        ["embeddings"] => (Route::Embeddings, GET),
        ["models"] => (Route::Models, GET),
        ["models", folder] if !folder.is_empty() => (Route::ModelFolder((*folder).to_owned()), GET),
        ["extensions"] => (Route::Extensions, GET),
        ["upload", "image"] => (Route::UploadImage, POST),
        ["view"] => (Route::View, GET),
        ["system_stats"] => (Route::SystemStats, GET),
        ["features"] => (Route::Features, GET),
        ["prompt"] => (Route::Prompt, GET_POST),
        ["object_info"] => (Route::ObjectInfo, GET),
        ["object_info", class] if !class.is_empty() => {
            (Route::ObjectInfoClass((*class).to_owned()), GET)
        }
        ["history"] => (Route::History, GET_POST),
        ["history", id] if !id.is_empty() => (Route::HistoryId((*id).to_owned()), GET),
        ["queue"] => (Route::Queue, GET_POST),
        ["interrupt"] => (Route::Interrupt, POST),
        ["free"] => (Route::Free, POST),
        ["jobs"] if jobs => (Route::Jobs, GET),
        ["jobs", "cancel"] if jobs => (Route::Job("cancel".to_owned()), GET_POST),
        ["jobs", id] if jobs && !id.is_empty() => (Route::Job((*id).to_owned()), GET),
        ["jobs", id, "cancel"] if jobs && !id.is_empty() => {
            (Route::JobCancel((*id).to_owned()), POST)
        }
        _ => return None,
    })
}

/// aiohttp's `Allow`: the route's methods, HEAD added to GET ones, sorted.
fn allow(methods: &[&str]) -> String {
    let mut all: Vec<&str> = methods.to_vec();
    if all.contains(&"GET") {
        all.push("HEAD");
    }
    all.sort_unstable();
    all.join(",")
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.stall.wait().await;
    let Some((route, methods)) = route(req.uri().path(), shared.protocol) else {
        return respond::unknown_route();
    };
    let method = if req.method() == Method::HEAD {
        "GET"
    } else {
        req.method().as_str()
    };
    if !methods.contains(&method) {
        return respond::method_not_allowed(&allow(methods));
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    match (route, method) {
        (Route::Ws, _) => websocket(shared, req, &query).await,
        (Route::Index, _) => respond::html(
            "<!doctype html><title>ComfyUI (comfy-sim)</title><p>comfy-sim: a ComfyUI protocol simulator, no front end.</p>",
        ),
        (Route::Embeddings, _) => respond::ok_json(&serde_json::json!([])),
        (Route::Models, _) => info::models(&shared),
        (Route::ModelFolder(folder), _) => info::model_folder(&shared, &folder),
        (Route::Extensions, _) => respond::ok_json(&crate::recorded::extensions()),
        (Route::SystemStats, _) => info::system_stats(&shared),
        (Route::Features, _) => respond::ok_json(&crate::recorded::features()),
        (Route::ObjectInfo, _) => info::object_info(&shared, None),
        (Route::ObjectInfoClass(class), _) => info::object_info(&shared, Some(&class)),
        (Route::View, _) => files::view(&shared, &query).await,
        (Route::Prompt, "GET") => prompt::get_prompt(&shared),
        (Route::Queue, "GET") => queue::get_queue(&shared),
        (Route::History, "GET") => queue::get_history(&shared, &query).await,
        (Route::HistoryId(id), _) => queue::get_history_id(&shared, &id).await,
        (Route::Jobs, _) => jobs::list(&shared, &query),
        (Route::Job(id), "GET") => jobs::one(&shared, &id),
        (route, _) => {
            let content_type = req
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_BODY).await else {
                return respond::internal_error();
            };
            post(&shared, route, &content_type, &body).await
        }
    }
}

async fn post(shared: &Arc<Shared>, route: Route, content_type: &str, body: &Bytes) -> Response {
    match route {
        Route::Prompt => prompt::post_prompt(shared, body),
        Route::Queue => queue::post_queue(shared, body),
        Route::History => queue::post_history(shared, body),
        Route::Interrupt => queue::post_interrupt(shared, body),
        Route::Free => queue::post_free(shared, body),
        Route::Job(_) => jobs::cancel_many(shared, body),
        Route::JobCancel(id) => jobs::cancel(shared, &id),
        Route::UploadImage => files::upload_image(shared, content_type, body).await,
        _ => respond::unknown_route(),
    }
}

/// `GET /ws?clientId=ID`: a new hex uuid when the id is absent or empty.
async fn websocket(shared: Arc<Shared>, req: Request, query: &[(String, String)]) -> Response {
    let sid = first(query, "clientId")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let (mut parts, _) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => {
            upgrade.on_upgrade(move |socket| crate::ws::serve_socket(shared, socket, sid))
        }
        Err(_) => respond::bad_request_text("400: Bad Request"),
    }
}

/// The first value of a query parameter, as aiohttp's `query[key]`.
fn first<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        let old = Protocol::Recorded;
        assert_eq!(route("/api/prompt", old).map(|r| r.0), Some(Route::Prompt));
        assert_eq!(
            route("/object_info/Load%20Image", old).map(|r| r.0),
            Some(Route::ObjectInfoClass("Load Image".into()))
        );
        assert_eq!(route("/no/such/route", old), None);
        assert_eq!(route("/apiprompt", old), None);
        assert_eq!(allow(GET_POST), "GET,HEAD,POST");
        assert_eq!(percent_decode("a%2Fb%"), "a/b%");
    }

    #[test]
    fn the_jobs_api_is_only_under_api_and_only_in_2026() {
        let new = Protocol::Y2026;
        assert_eq!(route("/api/jobs", Protocol::Recorded), None);
        assert_eq!(route("/jobs", new), None);
        assert_eq!(route("/jobs/x/cancel", new), None);
        assert_eq!(route("/api/jobs", new).map(|r| r.0), Some(Route::Jobs));
        assert_eq!(
            route("/api/jobs/abc", new).map(|r| r.0),
            Some(Route::Job("abc".into()))
        );
        assert_eq!(
            route("/api/jobs/abc/cancel", new),
            Some((Route::JobCancel("abc".into()), POST))
        );
        assert_eq!(
            route("/api/jobs/cancel", new),
            Some((Route::Job("cancel".into()), GET_POST))
        );
    }
}
