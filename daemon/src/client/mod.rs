//! A typed client for the ComfyUI server the daemon drives.
//!
//! Every endpoint the daemon needs, with typed answers and typed errors: what failed (the
//! server is unreachable, too slow, rejected the prompt, answered an unexpected status, broke
//! the protocol) decides whether the daemon waits and retries or fails the job. The websocket
//! is an [`EventStream`] of typed [`Event`]s; [`Client::run_prompt`] does a whole prompt
//! correctly (socket first, then submit, follow to the end, reconcile with `/history`).
//!
//! Timeouts allow for ComfyUI's ~0.3 s garbage-collection stalls after idling. No `Origin`
//! header is sent: ComfyUI rejects mismatched origins on loopback.
//!
//! Cancelling follows the server: 2026 releases have `POST /api/jobs/{id}/cancel`, atomic for
//! running and pending prompts, and the client uses it where a probe finds it (once per server
//! start, see [`Client::has_jobs_cancel`]); older servers get `POST /queue {"delete"}` and
//! `POST /interrupt {"prompt_id"}`. Prompt ids the client makes are canonical lowercase UUIDs,
//! the only ids 2026 servers take.
//!
//! `https://` servers (ComfyUI behind a reverse proxy) are reached with one rustls
//! configuration for HTTP and the websocket (`wss://`): the system's roots plus
//! `SSL_CERT_FILE` (see `comfy_net::tls`). Extra headers (an auth token) go on every request
//! and on the websocket handshake; their values are never logged.

mod events;
mod hub;
mod run;
mod types;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub use comfy_net::Headers;

pub use events::{Event, ExecutionError, NodeProgress};
pub use hub::{Hub, HubEvent, Subscription};
pub use run::{Outcome, RunOptions, RunReport, RunTimings};
pub use types::{
    Device, ErrorInfo, FileRef, HistoryEntry, HistoryStatus, NodeError, OutputFile,
    PromptRejection, Queue, QueueItem, Submitted, SystemInfo, SystemStats, Uploaded, display_node,
};

/// What can go wrong talking to ComfyUI.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the address (down, restarting, wrong port).
    #[error("ComfyUI at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The TLS handshake failed: the certificate is not trusted or not valid for the name,
    /// or the server does not speak TLS there. Waiting will not fix it.
    #[error("cannot reach ComfyUI at {url} securely: {reason}")]
    Tls { url: String, reason: String },
    /// It answered too slowly.
    #[error("ComfyUI at {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    /// `POST /prompt` answered 400: the prompt is invalid.
    #[error("ComfyUI rejected the prompt: {0}")]
    Rejected(Box<PromptRejection>),
    /// Another unexpected status; `json` holds a JSON body, `body` the text.
    #[error("ComfyUI answered {status} to {url}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
        json: Option<Box<Value>>,
    },
    /// An answer of the wrong shape.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The websocket failed or closed.
    #[error("websocket to {url}: {reason}")]
    Websocket { url: String, reason: String },
    /// The prompt vanished: neither queued, running nor in the history (a restart lost it).
    #[error("prompt {prompt_id} is gone from ComfyUI's queue and history (was it restarted?)")]
    Lost { prompt_id: String },
    /// A run took longer than its timeout; the prompt was interrupted.
    #[error("prompt {prompt_id} ran longer than {after:?} and was interrupted")]
    RunTimeout { prompt_id: String, after: Duration },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: Arc<std::io::Error>,
    },
}

impl ClientError {
    /// Whether waiting and retrying may help: the server is down, restarting or overloaded.
    /// A rejected prompt, a bad answer or a local I/O error will fail again.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Timeout { .. }
            | ClientError::Websocket { .. }
            | ClientError::Lost { .. } => true,
            ClientError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Time limits of the client's requests.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Establishing a TCP connection.
    pub connect: Duration,
    /// One HTTP request, answer included. Well above ComfyUI's GC stalls.
    pub request: Duration,
    /// `GET /object_info`, slow on large installs.
    pub object_info: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            object_info: Duration::from_secs(120),
        }
    }
}

/// Options of [`Client::upload_image`].
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    pub subfolder: Option<String>,
    pub overwrite: bool,
    /// `input` (default), `temp` or `output`.
    pub kind: Option<String>,
}

/// A ComfyUI server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    timeouts: Timeouts,
    /// Sent on every request and on the websocket handshake.
    headers: Headers,
    /// Whom https and wss trust.
    tls: Arc<rustls::ClientConfig>,
    /// Whether the server has `POST /api/jobs/{id}/cancel`, once probed; shared by clones (the
    /// same server) and forgotten when the server cannot be reached (it may come back as
    /// another release).
    jobs_cancel: Arc<std::sync::Mutex<Option<bool>>>,
}

/// How [`Client::cancel`] reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// `POST /api/jobs/{id}/cancel`; `cancelled` is the server's answer (false: the prompt was
    /// unknown or had already finished).
    JobsApi { cancelled: bool },
    /// The server has no jobs cancel: `POST /queue {"delete"}`, then `POST /interrupt` naming
    /// the prompt (which interrupts only if it is the one running).
    QueueAndInterrupt,
}

/// What a probe of `POST /api/jobs/{id}/cancel` (with an id no job has) says of the server:
/// `Some(true)` when it answers 200 `{"cancelled": bool}` (2026 releases), `Some(false)` when
/// the route does not exist (404 or 405, ComfyUI 0.3.x), `None` when the answer says neither
/// (an error, a proxy's refusal): then ask again later.
pub fn cancel_support(status: u16, body: &[u8]) -> Option<bool> {
    match status {
        200 => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("cancelled").map(Value::is_boolean))
            .filter(|has| *has),
        404 | 405 => Some(false),
        _ => None,
    }
}

impl Client {
    /// A client for the server at `base_url` (`http://127.0.0.1:8188`).
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        Self::with_timeouts(base_url, Timeouts::default())
    }

    pub fn with_timeouts(base_url: &str, timeouts: Timeouts) -> Result<Client, ClientError> {
        Self::with_headers(base_url, timeouts, Headers::default())
    }

    /// A client sending `headers` with every request (`Authorization` for a proxy in front of
    /// ComfyUI). An `SSL_CERT_FILE` that cannot be read is an error here.
    pub fn with_headers(
        base_url: &str,
        timeouts: Timeouts,
        headers: Headers,
    ) -> Result<Client, ClientError> {
        let tls = comfy_net::client_config().map_err(|e| ClientError::Tls {
            url: base_url.trim_end_matches('/').to_owned(),
            reason: e.to_string(),
        })?;
        Self::build(base_url, timeouts, headers, tls)
    }

    /// The same settings for another server (a prompt another daemon submitted elsewhere).
    pub fn at(&self, base_url: &str) -> Result<Client, ClientError> {
        Self::build(
            base_url,
            self.timeouts,
            self.headers.clone(),
            self.tls.clone(),
        )
    }

    fn build(
        base_url: &str,
        timeouts: Timeouts,
        headers: Headers,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ClientError::Protocol {
                url: base,
                reason: "the ComfyUI URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .default_headers(headers.map().clone())
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .build()
            .map_err(|e| ClientError::Protocol {
                url: base.clone(),
                reason: comfy_net::describe(&e),
            })?;
        Ok(Client {
            http,
            base,
            timeouts,
            headers,
            tls,
            jobs_cancel: Arc::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn map_err(&self, url: &str, e: reqwest::Error, timeout: Duration) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout {
                url: url.to_owned(),
                after: timeout,
            }
        } else if comfy_net::tls_error(&e).is_some() {
            ClientError::Tls {
                url: self.base.clone(),
                reason: comfy_net::describe(&e),
            }
        } else if e.is_connect() || e.is_request() {
            ClientError::Unreachable {
                url: url.to_owned(),
                reason: comfy_net::describe(&e),
            }
        } else {
            ClientError::Protocol {
                url: url.to_owned(),
                reason: comfy_net::describe(&e),
            }
        }
    }

    /// Sends a request and returns the body of a 2xx answer; other statuses are errors.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let resp = req
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.map_err(url, e, timeout))
            .inspect_err(|e| self.forget_if_gone(e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.map_err(url, e, timeout))
            .inspect_err(|e| self.forget_if_gone(e))?;
        if status.is_success() {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        Err(ClientError::Http {
            url: url.to_owned(),
            status: status.as_u16(),
            json: serde_json::from_str(&text).ok().map(Box::new),
            body: text,
        })
    }

    /// The server went away: what was detected about it may not hold when it comes back.
    fn forget_if_gone(&self, e: &ClientError) {
        if matches!(e, ClientError::Unreachable { .. })
            && let Ok(mut known) = self.jobs_cancel.lock()
        {
            *known = None;
        }
    }

    /// Whether the server has `POST /api/jobs/{id}/cancel` (2026 releases). Probed once with
    /// an id no job has, which cancels nothing, and remembered until the server cannot be
    /// reached; an answer that says neither yes nor no is not remembered.
    pub async fn has_jobs_cancel(&self) -> Result<bool, ClientError> {
        if let Some(known) = self.jobs_cancel.lock().ok().and_then(|k| *k) {
            return Ok(known);
        }
        let probe = uuid::Uuid::new_v4();
        let url = self.endpoint(&format!("/api/jobs/{probe}/cancel"));
        let answer = match self
            .send(
                self.http.post(&url).json(&json!({})),
                &url,
                self.timeouts.request,
            )
            .await
        {
            Ok(body) => cancel_support(200, &body),
            Err(ClientError::Http { status, body, .. }) => cancel_support(status, body.as_bytes()),
            Err(e) => return Err(e),
        };
        match answer {
            Some(has) => {
                tracing::debug!(url = %self.base, jobs_cancel = has, "probed the server's cancel");
                if let Ok(mut known) = self.jobs_cancel.lock() {
                    *known = Some(has);
                }
                Ok(has)
            }
            None => Ok(false),
        }
    }

    /// Cancels a prompt, pending or running: through `POST /api/jobs/{id}/cancel` where the
    /// server has it (atomic: it cannot hit another prompt), else by deleting it from the queue
    /// and interrupting it if it runs (both are tried; the first error is returned).
    pub async fn cancel(&self, prompt_id: &str) -> Result<Cancelled, ClientError> {
        if self.has_jobs_cancel().await? {
            let path = format!("/api/jobs/{prompt_id}/cancel");
            match self.post_json(&path, &json!({})).await {
                Ok(body) => {
                    let url = self.endpoint(&path);
                    let v: Value = parse(&url, &body)?;
                    let cancelled = v.get("cancelled").and_then(Value::as_bool).ok_or(
                        ClientError::Protocol {
                            url,
                            reason: format!("expected {{\"cancelled\": bool}}, got {v}"),
                        },
                    )?;
                    return Ok(Cancelled::JobsApi { cancelled });
                }
                // Replaced by an older server without going away: probe again next time.
                Err(ClientError::Http {
                    status: 404 | 405, ..
                }) => {
                    if let Ok(mut known) = self.jobs_cancel.lock() {
                        *known = None;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let deleted = self.delete_queued(&[prompt_id]).await;
        let interrupted = self.interrupt(Some(prompt_id)).await;
        deleted
            .and(interrupted)
            .map(|()| Cancelled::QueueAndInterrupt)
    }

    /// `GET /api/jobs/{id}` (2026 releases): `None` when the server has no such job, or no
    /// jobs API.
    pub async fn job(&self, prompt_id: &str) -> Result<Option<Value>, ClientError> {
        match self.get_json(&format!("/api/jobs/{prompt_id}")).await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.endpoint(path);
        let body = self
            .send(self.http.get(&url), &url, self.timeouts.request)
            .await?;
        parse(&url, &body)
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Bytes, ClientError> {
        let url = self.endpoint(path);
        self.send(self.http.post(&url).json(body), &url, self.timeouts.request)
            .await
    }

    /// `POST /prompt`. A 400 is [`ClientError::Rejected`]; a 200 may still carry
    /// `node_errors` (only the valid outputs run).
    pub async fn submit(
        &self,
        prompt: &Value,
        client_id: &str,
        prompt_id: Option<&str>,
        extra_data: Option<&Value>,
    ) -> Result<Submitted, ClientError> {
        let url = self.endpoint("/prompt");
        let mut body = json!({"prompt": prompt, "client_id": client_id});
        if let Some(id) = prompt_id {
            body["prompt_id"] = id.into();
        }
        if let Some(extra) = extra_data {
            body["extra_data"] = extra.clone();
        }
        match self
            .send(
                self.http.post(&url).json(&body),
                &url,
                self.timeouts.request,
            )
            .await
        {
            Ok(bytes) => parse(&url, &bytes),
            Err(ClientError::Http {
                status: 400,
                json: Some(j),
                url,
                body,
            }) => match serde_json::from_value::<PromptRejection>((*j).clone()) {
                Ok(r) => Err(ClientError::Rejected(Box::new(r))),
                Err(_) => Err(ClientError::Http {
                    url,
                    status: 400,
                    body,
                    json: Some(j),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// `GET /history/ID`: `None` while ComfyUI has no entry for it.
    pub async fn history(&self, prompt_id: &str) -> Result<Option<HistoryEntry>, ClientError> {
        let all: serde_json::Map<String, Value> =
            self.get_json(&format!("/history/{prompt_id}")).await?;
        match all.get(prompt_id) {
            None => Ok(None),
            Some(v) => {
                serde_json::from_value(v.clone())
                    .map(Some)
                    .map_err(|e| ClientError::Protocol {
                        url: self.endpoint("/history"),
                        reason: e.to_string(),
                    })
            }
        }
    }

    fn view_request(&self, file: &FileRef) -> (String, reqwest::RequestBuilder) {
        let url = self.endpoint("/view");
        let req = self.http.get(&url).query(&[
            ("filename", &file.filename),
            ("subfolder", &file.subfolder),
            ("type", &file.kind),
        ]);
        (url, req)
    }

    /// `GET /view`, streamed into `dest` (created or truncated). Returns the bytes written.
    pub async fn download(&self, file: &FileRef, dest: &Path) -> Result<u64, ClientError> {
        let (url, req) = self.view_request(file);
        // Outputs can be large videos: no whole-request timeout, only between chunks.
        let resp = req
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(|e| self.map_err(&url, e, self.timeouts.request))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Http {
                url,
                status: status.as_u16(),
                json: serde_json::from_str(&body).ok().map(Box::new),
                body,
            });
        }
        let io = |e: std::io::Error| ClientError::Io {
            path: dest.display().to_string(),
            source: Arc::new(e),
        };
        let mut out = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut stream = resp.bytes_stream();
        let mut written = 0u64;
        loop {
            let chunk = tokio::time::timeout(self.timeouts.request, stream.next())
                .await
                .map_err(|_| ClientError::Timeout {
                    url: url.clone(),
                    after: self.timeouts.request,
                })?;
            match chunk {
                None => break,
                Some(Ok(bytes)) => {
                    out.write_all(&bytes).await.map_err(io)?;
                    written += bytes.len() as u64;
                }
                Some(Err(e)) => return Err(self.map_err(&url, e, self.timeouts.request)),
            }
        }
        out.flush().await.map_err(io)?;
        out.sync_all().await.map_err(io)?;
        Ok(written)
    }

    /// `GET /view` into memory, for small files.
    pub async fn view(&self, file: &FileRef) -> Result<Bytes, ClientError> {
        let (url, req) = self.view_request(file);
        self.send(req, &url, self.timeouts.request).await
    }

    /// `POST /upload/image`: makes `bytes` available to LoadImage as `name`.
    pub async fn upload_image(
        &self,
        bytes: Vec<u8>,
        name: &str,
        opts: &UploadOptions,
    ) -> Result<Uploaded, ClientError> {
        let url = self.endpoint("/upload/image");
        let mut form = reqwest::multipart::Form::new()
            .part(
                "image",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
            )
            .text("overwrite", if opts.overwrite { "true" } else { "false" });
        if let Some(s) = &opts.subfolder {
            form = form.text("subfolder", s.clone());
        }
        if let Some(k) = &opts.kind {
            form = form.text("type", k.clone());
        }
        let body = self
            .send(
                self.http.post(&url).multipart(form),
                &url,
                self.timeouts.request,
            )
            .await?;
        parse(&url, &body)
    }

    /// `GET /queue`, pending items in execution order.
    pub async fn queue(&self) -> Result<Queue, ClientError> {
        let v: Value = self.get_json("/queue").await?;
        Ok(Queue::from_value(&v))
    }

    /// Removes pending prompts from the queue (running ones are not affected).
    pub async fn delete_queued(&self, prompt_ids: &[&str]) -> Result<(), ClientError> {
        self.post_json("/queue", &json!({"delete": prompt_ids}))
            .await
            .map(drop)
    }

    /// Removes every pending prompt.
    pub async fn clear_queue(&self) -> Result<(), ClientError> {
        self.post_json("/queue", &json!({"clear": true}))
            .await
            .map(drop)
    }

    /// `POST /interrupt`: the running prompt, or only `prompt_id` if it is the one running.
    /// ComfyUI stops between nodes, not inside one.
    pub async fn interrupt(&self, prompt_id: Option<&str>) -> Result<(), ClientError> {
        let body = match prompt_id {
            Some(id) => json!({"prompt_id": id}),
            None => json!({}),
        };
        self.post_json("/interrupt", &body).await.map(drop)
    }

    /// `POST /free`: unload models and/or free memory, after the running prompt.
    pub async fn free(&self, unload_models: bool, free_memory: bool) -> Result<(), ClientError> {
        self.post_json(
            "/free",
            &json!({"unload_models": unload_models, "free_memory": free_memory}),
        )
        .await
        .map(drop)
    }

    /// `GET /object_info`: the node catalogue.
    pub async fn object_info(&self) -> Result<Value, ClientError> {
        let url = self.endpoint("/object_info");
        let body = self
            .send(self.http.get(&url), &url, self.timeouts.object_info)
            .await?;
        parse(&url, &body)
    }

    /// `GET /system_stats`.
    pub async fn system_stats(&self) -> Result<SystemStats, ClientError> {
        self.get_json("/system_stats").await
    }

    /// `GET /models/FOLDER`: model files the server has.
    pub async fn models(&self, folder: &str) -> Result<Vec<String>, ClientError> {
        self.get_json(&format!("/models/{folder}")).await
    }

    /// Opens the websocket for `client_id`. Execution events of prompts submitted with the same
    /// `client_id` come only to this socket, so connect before submitting.
    pub async fn connect(&self, client_id: &str) -> Result<EventStream, ClientError> {
        let ws_url = format!(
            "{}/ws?clientId={client_id}",
            self.base.replacen("http", "ws", 1)
        );
        let err = |reason: String| ClientError::Websocket {
            url: ws_url.clone(),
            reason,
        };
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| err(e.to_string()))?;
        request.headers_mut().extend(self.headers.map().clone());
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let (mut socket, _) = tokio::time::timeout(
            self.timeouts.request,
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector)),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            url: ws_url.clone(),
            after: self.timeouts.request,
        })?
        .map_err(|e| self.ws_connect_error(&ws_url, e))?;
        // Previews then carry their prompt id.
        let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
        socket
            .send(Message::Text(flags.to_string().into()))
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(EventStream {
            socket,
            url: ws_url,
        })
    }

    /// Why the websocket could not be opened, in the terms of [`ClientError`]: a refused
    /// certificate and an HTTP answer (401 from a proxy wanting a token) are not transient.
    fn ws_connect_error(
        &self,
        ws_url: &str,
        e: tokio_tungstenite::tungstenite::Error,
    ) -> ClientError {
        use tokio_tungstenite::tungstenite::Error as WsError;
        if comfy_net::tls_error(&e).is_some() || matches!(e, WsError::Tls(_)) {
            return ClientError::Tls {
                url: self.base.clone(),
                reason: comfy_net::describe(&e),
            };
        }
        match e {
            WsError::Io(io) => ClientError::Unreachable {
                url: ws_url.to_owned(),
                reason: comfy_net::describe(&io),
            },
            WsError::Http(resp) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                ClientError::Http {
                    url: ws_url.to_owned(),
                    status: resp.status().as_u16(),
                    json: serde_json::from_str(&body).ok().map(Box::new),
                    body,
                }
            }
            other => ClientError::Websocket {
                url: ws_url.to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
        url: url.to_owned(),
        reason: format!(
            "{e}; the answer began {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        ),
    })
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The websocket as a stream of events.
pub struct EventStream {
    socket: Socket,
    url: String,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.url)
            .finish()
    }
}

impl EventStream {
    /// The next event; `None` when the server closed the socket. Frames that cannot be parsed
    /// are errors, but the stream stays usable.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            let msg = match self.socket.next().await? {
                Ok(m) => m,
                Err(e) => {
                    return Some(Err(ClientError::Websocket {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    }));
                }
            };
            let parsed = match msg {
                Message::Text(t) => Event::from_text(t.as_str()),
                Message::Binary(b) => Event::from_binary(&b),
                Message::Close(_) => return None,
                // Pings are answered by the library; nothing else to report.
                _ => continue,
            };
            return Some(parsed.map_err(|reason| ClientError::Protocol {
                url: self.url.clone(),
                reason,
            }));
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cancel_probe_reads_the_servers_answer() {
        assert_eq!(cancel_support(200, br#"{"cancelled": false}"#), Some(true));
        assert_eq!(cancel_support(200, br#"{"cancelled": true}"#), Some(true));
        // ComfyUI 0.3.x: an unknown route is an empty 404; a wrong method a 405.
        assert_eq!(cancel_support(404, b""), Some(false));
        assert_eq!(cancel_support(405, b"405: Method Not Allowed"), Some(false));
        // Neither: a 200 of another shape (a catch-all page), a proxy's 401, a 500.
        assert_eq!(cancel_support(200, b"<html>"), None);
        assert_eq!(cancel_support(200, br#"{"cancelled": "yes"}"#), None);
        assert_eq!(cancel_support(401, b"unauthorized"), None);
        assert_eq!(cancel_support(500, b""), None);
    }
}
