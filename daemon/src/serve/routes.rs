//! The HTTP endpoints of `comfyd serve` (see README, "HTTP API"). Every error is
//! `{"error": {"code", "message", "details"}}`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Catalog;
use super::auth::{Scope, Tokens, Verdict};
use super::runs::{self, Runs, Submitted};
use super::webhooks::Hooks;

/// What every handler shares.
pub struct App {
    pub runs: Arc<Runs>,
    /// The workflows served, replaced whole when the repository changes.
    pub catalog: std::sync::RwLock<Arc<Catalog>>,
    pub tokens: Option<Tokens>,
    pub inputs: Option<PathBuf>,
    pub hooks: Arc<Hooks>,
}

type Shared = State<Arc<App>>;

impl App {
    /// The workflows as loaded last.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The router: API, document and page, with the body limit.
pub fn router(app: Arc<App>, max_body: u64) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
        .route("/openapi.json", get(openapi))
        .route("/v1/workflows", get(workflows))
        .route("/v1/workflows/{name}", get(workflow))
        .route("/v1/workflows/{name}/runs", axum::routing::post(submit))
        .route("/v1/runs", get(list))
        .route("/v1/runs/{id}", get(run).delete(cancel))
        .route("/v1/runs/{id}/events", get(events))
        .route("/v1/runs/{id}/outputs/{file}", get(output))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(
            usize::try_from(max_body).unwrap_or(usize::MAX),
        ))
        .with_state(app)
}

/// An error response in the API's one shape.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_with(status, code, message, Vec::new())
}

fn error_with(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    details: Vec<Value>,
) -> Response {
    let mut e = json!({"code": code, "message": message.into()});
    if !details.is_empty() {
        e["details"] = Value::Array(details);
    }
    (status, Json(json!({ "error": e }))).into_response()
}

fn authorize(app: &App, headers: &HeaderMap, scope: Scope) -> Result<(), Box<Response>> {
    let Some(tokens) = &app.tokens else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens.check(given, scope) {
        Verdict::Allowed => Ok(()),
        Verdict::Unauthenticated => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send `Authorization: Bearer TOKEN` with a token from the server's token file",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(Box::new(r))
        }
        Verdict::Forbidden => Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token lacks the `{}` scope", scope.as_str()),
        ))),
    }
}

macro_rules! authorized {
    ($app:expr, $headers:expr, $scope:expr) => {
        if let Err(r) = authorize(&$app, &$headers, $scope) {
            return *r;
        }
    };
}

async fn index() -> Response {
    page_file("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    page_file(&format!("assets/{path}"))
}

fn page_file(path: &str) -> Response {
    match super::page::file(path) {
        Some((bytes, media)) => ([(header::CONTENT_TYPE, media)], bytes).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no page file `{path}`"),
        ),
    }
}

async fn openapi(State(app): Shared) -> Response {
    Json(app.catalog().openapi.clone()).into_response()
}

fn summary(w: &comfyc::Workflow) -> Value {
    json!({
        "name": w.name,
        "title": w.title.as_deref().unwrap_or(&w.name),
        "description": w.description,
        "version": w.version,
    })
}

async fn workflows(State(app): Shared, headers: HeaderMap) -> Response {
    authorized!(app, headers, Scope::Read);
    let list: Vec<Value> = app.catalog().by_name.values().map(|w| summary(w)).collect();
    Json(json!({ "workflows": list })).into_response()
}

fn unknown_workflow(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_workflow",
        format!("no workflow `{name}` (GET /v1/workflows lists them)"),
    )
}

async fn workflow(State(app): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    authorized!(app, headers, Scope::Read);
    let catalog = app.catalog();
    let Some(w) = catalog.by_name.get(&name) else {
        return unknown_workflow(&name);
    };
    let mut v = summary(w);
    v["schema"] = w.schema.clone();
    v["uischema"] = catalog
        .uischemas
        .get(&name)
        .cloned()
        .unwrap_or_else(|| json!({}));
    Json(v).into_response()
}

/// A submission as read from its body, before validation.
struct Submission {
    inputs: Map<String, Value>,
    webhook: Option<String>,
    /// Uploaded files: input name, bytes, extension.
    files: Vec<(String, Bytes, String)>,
}

fn detail(input: Option<&str>, message: impl Into<String>) -> Value {
    json!({"input": input, "message": message.into()})
}

fn invalid(details: Vec<Value>) -> Response {
    let message = details
        .iter()
        .filter_map(|d| d["message"].as_str())
        .collect::<Vec<_>>()
        .join("; ");
    error_with(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_inputs",
        message,
        details,
    )
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "the request body is larger than this server takes (--max-body)",
    )
}

async fn read_json(req: Request) -> Result<Submission, Response> {
    let body = match Bytes::from_request(req, &()).await {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, "bad_body", e.body_text())),
    };
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Value::Object(mut m) = v else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "the body must be a JSON object: {\"inputs\": {...}}",
        ));
    };
    let mut details = Vec::new();
    let inputs = match m.remove("inputs") {
        Some(Value::Object(i)) => i,
        Some(_) => {
            details.push(detail(None, "`inputs` must be an object"));
            Map::new()
        }
        None => {
            details.push(detail(None, "the body has no `inputs` object"));
            Map::new()
        }
    };
    let webhook = match m.remove("webhook") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            details.push(detail(None, "`webhook` must be a URL string"));
            None
        }
    };
    for k in m.keys() {
        details.push(detail(
            None,
            format!("unknown field `{k}` (a run takes `inputs` and `webhook`)"),
        ));
    }
    if !details.is_empty() {
        return Err(invalid(details));
    }
    Ok(Submission {
        inputs,
        webhook,
        files: Vec::new(),
    })
}

async fn read_multipart(req: Request, w: &comfyc::Workflow) -> Result<Submission, Response> {
    let mut mp = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_multipart",
                e.body_text(),
            ));
        }
    };
    let mut inputs: Option<Map<String, Value>> = None;
    let mut webhook = None;
    let mut files = Vec::new();
    let mut details = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_multipart",
                    e.body_text(),
                ));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_multipart",
                    e.body_text(),
                ));
            }
        };
        match name.as_str() {
            "inputs" => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => inputs = Some(m),
                _ => details.push(detail(None, "the `inputs` part must be a JSON object")),
            },
            "webhook" => webhook = Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => match w.input(&name) {
                Some(i) if i.ty.is_file() => {
                    match super::uploads::extension(file_name.as_deref().unwrap_or("upload")) {
                        Ok(ext) => files.push((name, bytes, ext)),
                        Err(e) => details.push(detail(Some(&name), format!("input `{name}`: {e}"))),
                    }
                }
                Some(_) => details.push(detail(
                    Some(&name),
                    format!("input `{name}` is not a file input: put it in the `inputs` part"),
                )),
                None => details.push(detail(
                    Some(&name),
                    format!("workflow `{}` has no input `{name}`", w.name),
                )),
            },
        }
    }
    let Some(inputs) = inputs else {
        details.push(detail(None, "the form has no `inputs` part (JSON text)"));
        return Err(invalid(details));
    };
    if !details.is_empty() {
        return Err(invalid(details));
    }
    Ok(Submission {
        inputs,
        webhook,
        files,
    })
}

async fn submit(State(app): Shared, Path(name): Path<String>, req: Request) -> Response {
    authorized!(app, req.headers(), Scope::Submit);
    let Some(w) = app.catalog().by_name.get(&name).cloned() else {
        return unknown_workflow(&name);
    };
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            );
        }
    };
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let sub = if ctype.starts_with("application/json") {
        read_json(req).await
    } else if ctype.starts_with("multipart/form-data") {
        read_multipart(req, &w).await
    } else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json or multipart/form-data",
        );
    };
    let Submission {
        mut inputs,
        webhook,
        files,
    } = match sub {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Everything is checked before anything is written.
    let mut details = Vec::new();
    if let Some(url) = &webhook {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if !app.hooks.has_secret() {
                    details.push(detail(None, "this server has no webhook secret ([serve] webhook_secret in comfyd.toml): it sends no webhooks"));
                }
            }
            _ => details.push(detail(
                None,
                format!("`webhook`: `{url}` is not an http(s) URL"),
            )),
        }
    }
    for (input, bytes, ext) in &files {
        inputs.insert(
            input.clone(),
            Value::String(super::uploads::stored_name(bytes, ext)),
        );
    }
    for i in w.inputs.iter().filter(|i| i.ty.is_file()) {
        let Some(Value::String(rel)) = inputs.get(&i.name) else {
            continue;
        };
        if files.iter().any(|(n, _, _)| *n == i.name) {
            continue;
        }
        match &app.inputs {
            None => details.push(detail(
                Some(&i.name),
                format!(
                    "input `{}`: this server has no inputs root (--inputs) for files",
                    i.name
                ),
            )),
            Some(root) => {
                if let Err(e) = crate::runner::resolve_input_path(root, rel) {
                    details.push(detail(Some(&i.name), format!("input `{}`: {e}", i.name)));
                }
            }
        }
    }
    if !files.is_empty() && app.inputs.is_none() {
        details.push(detail(
            None,
            "this server has no inputs root (--inputs): it takes no uploads",
        ));
    }
    let errors = w.validate(&inputs);
    if !errors.is_empty() {
        details.extend(crate::runner::invalid_inputs(&errors).details);
    }
    if !details.is_empty() {
        return invalid(details);
    }
    if let Some(root) = &app.inputs {
        for (input, bytes, ext) in &files {
            if let Err(e) = super::uploads::store(root, bytes, ext) {
                tracing::error!(%input, "storing an upload: {e}");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    format!("storing the upload for `{input}` failed"),
                );
            }
        }
    }
    let runs = app.runs.clone();
    let workflow = w.id();
    let hook = webhook.clone();
    let submitted =
        tokio::task::spawn_blocking(move || runs.submit(&workflow, inputs, hook, key.as_deref()))
            .await;
    let submitted = match submitted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::error!("writing a run into the job directory: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "the run could not be written into the job directory",
            );
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "submission failed",
            );
        }
    };
    match submitted {
        Submitted::Created(id) => {
            if let Some(url) = &webhook {
                app.hooks.add(&id, url);
            }
            let url = format!("/v1/runs/{id}");
            let body = json!({
                "id": id, "workflow": w.id(), "status": "queued", "url": url,
                "created": crate::runner::now_ms(),
            });
            (StatusCode::ACCEPTED, [(header::LOCATION, url)], Json(body)).into_response()
        }
        Submitted::Replayed(id) => match app.runs.get(&id) {
            Some(v) => (StatusCode::OK, Json(v)).into_response(),
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the run's record is unreadable",
            ),
        },
        Submitted::Conflict(id) => error(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            format!("this Idempotency-Key made run {id} with another body"),
        ),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list(
    State(app): Shared,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    authorized!(app, headers, Scope::Read);
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "`limit` is a number from 1 to 100, `cursor` the `next` of the page before",
        );
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "`limit` is a number from 1 to 100",
        );
    }
    let runs = app.runs.clone();
    let page = tokio::task::spawn_blocking(move || runs.list(limit, q.cursor.as_deref())).await;
    match page {
        Ok((runs, next)) => Json(json!({"runs": runs, "next": next})).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "listing failed",
        ),
    }
}

fn no_run(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_run",
        format!("no run `{}`", id.chars().take(64).collect::<String>()),
    )
}

async fn run(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    authorized!(app, headers, Scope::Read);
    match app.runs.get(&id) {
        Some(v) => Json(v).into_response(),
        None => no_run(&id),
    }
}

async fn cancel(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    authorized!(app, headers, Scope::Cancel);
    let Some(v) = app.runs.get(&id) else {
        return no_run(&id);
    };
    if runs::is_final(&v) {
        return Json(v).into_response();
    }
    if let Err(e) = app.runs.cancel(&id) {
        tracing::error!(run = %id, "cancelling: {e}");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            "the cancel could not be written into the job directory",
        );
    }
    match app.runs.get(&id) {
        Some(v) => Json(v).into_response(),
        None => no_run(&id),
    }
}

async fn events(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    authorized!(app, headers, Scope::Read);
    if app.runs.record(&id).is_none() {
        return no_run(&id);
    }
    let stream = futures_util::stream::unfold(
        (app, id, None::<Value>, false),
        |(app, id, last, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let v = app.runs.get(&id)?;
                if last.as_ref() != Some(&v) {
                    let end = runs::is_final(&v);
                    let event = Event::default().event("status").data(v.to_string());
                    return Some((Ok::<_, Infallible>(event), (app, id, Some(v), end)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What a `Range` header asks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// All of it: no header, or one this server does not take (several ranges, another unit).
    Whole,
    /// These bytes, both ends included.
    Part(u64, u64),
    /// Outside the file: 416.
    Unsatisfiable,
}

/// A single `Range: bytes=...` against a file of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> Span {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Span::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let span = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Some(start), None) if b.is_empty() => (start, len.saturating_sub(1)),
        (None, Some(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return Span::Unsatisfiable;
            }
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return Span::Whole,
    };
    if len == 0 || span.0 >= len {
        return Span::Unsatisfiable;
    }
    Span::Part(span.0, span.1)
}

async fn output(
    State(app): Shared,
    headers: HeaderMap,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    authorized!(app, headers, Scope::Read);
    let Some((path, media)) = app.runs.output(&id, &file) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_output",
            "no such run, or its manifest lists no such file",
        );
    };
    let Ok(mut f) = tokio::fs::File::open(&path).await else {
        return error(StatusCode::NOT_FOUND, "unknown_output", "the file is gone");
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, len) {
        Span::Whole => (StatusCode::OK, 0, len.saturating_sub(1)),
        Span::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        Span::Unsatisfiable => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("the file has {len} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io",
            "reading the file failed",
        );
    }
    let reader = f.take(count);
    let body = Body::from_stream(futures_util::stream::unfold(reader, |mut r| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    }));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&media) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range(None, 100), Span::Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Span::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Span::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Span::Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Span::Part(0, 99));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Span::Part(50, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Span::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Span::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Span::Unsatisfiable);
        // Not taken: served whole.
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Span::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), Span::Whole);
        assert_eq!(parse_range(Some("bytes=9-2"), 100), Span::Whole);
        assert_eq!(parse_range(Some("bytes=x-"), 100), Span::Whole);
    }
}
