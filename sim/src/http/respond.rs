//! Responses shaped like aiohttp's: `json_response` with its charset, bare `web.Response`s
//! with no content type, and the plain-text 500 and 405 pages.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::pyjson::dumps;
use crate::recorded::INTERNAL_ERROR;

fn build(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    response
}

/// `web.json_response(value, status=...)`.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response {
    build(
        status,
        Some("application/json; charset=utf-8"),
        dumps(value),
    )
}

pub(crate) fn ok_json(value: &Value) -> Response {
    json(StatusCode::OK, value)
}

/// `web.Response(status=...)`: no body, no content type.
pub(crate) fn empty(status: StatusCode) -> Response {
    build(status, None, Body::empty())
}

/// What aiohttp answers when a handler raises.
pub(crate) fn internal_error() -> Response {
    let mut r = build(
        StatusCode::INTERNAL_SERVER_ERROR,
        Some("text/plain; charset=utf-8"),
        INTERNAL_ERROR,
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// An unknown route: ComfyUI's middleware turns aiohttp's 404 into an empty octet-stream.
pub(crate) fn unknown_route() -> Response {
    build(
        StatusCode::NOT_FOUND,
        Some("application/octet-stream"),
        Body::empty(),
    )
}

pub(crate) fn method_not_allowed(allow: &str) -> Response {
    let mut r = build(
        StatusCode::METHOD_NOT_ALLOWED,
        Some("text/plain; charset=utf-8"),
        "405: Method Not Allowed",
    );
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

pub(crate) fn bad_request_text(text: &'static str) -> Response {
    build(
        StatusCode::BAD_REQUEST,
        Some("text/plain; charset=utf-8"),
        text,
    )
}

/// A file or generated image, with the headers ComfyUI's `/view` sets.
pub(crate) fn file(content_type: &str, filename: &str, bytes: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(bytes));
    let headers = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let disposition = format!("filename=\"{}\"", filename.replace('"', "\\\""));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

pub(crate) fn html(body: &'static str) -> Response {
    build(StatusCode::OK, Some("text/html"), body)
}
