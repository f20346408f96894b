//! The websocket side: one hub that addresses frames like ComfyUI's `send_sync(event, data,
//! sid)` (a client id, or every socket when `None`), and the per-socket task.
//!
//! Each socket has its own unbounded channel drained by a writer, so frames reach a socket in
//! the order they were sent. The hub also counts frames for `Fault::DropWebsockets` and keeps
//! what ComfyUI uses on reconnect (the running prompt's client and its last executing node).

use std::sync::Mutex;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::pyjson::dumps;
use crate::shared::lock;

#[derive(Default)]
pub(crate) struct Hub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    sockets: Vec<Socket>,
    next_conn: u64,
    /// Frames left before every socket is closed (`Fault::DropWebsockets`).
    drop_after: Option<usize>,
    /// `server.client_id` of the running prompt.
    executing_client: Option<String>,
    /// `server.last_node_id`: sent again to a client reconnecting mid-run.
    last_node: Option<String>,
}

struct Socket {
    sid: String,
    conn: u64,
    tx: mpsc::UnboundedSender<Message>,
    feature_flags: Option<Value>,
}

/// Who a frame is for.
enum To<'a> {
    Sid(Option<&'a str>),
    Conn(u64),
}

impl Hub {
    /// A JSON frame to client `sid`, or to every socket when `None`.
    pub(crate) fn send(&self, sid: Option<&str>, frame: &Value) {
        let text = dumps(frame);
        self.deliver(To::Sid(sid), Message::Text(text.into()));
    }

    /// A binary frame: a big-endian `u32` event type, then the payload.
    pub(crate) fn send_binary(&self, sid: Option<&str>, event: u32, payload: &[u8]) {
        let mut bytes = event.to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        self.deliver(To::Sid(sid), Message::Binary(Bytes::from(bytes)));
    }

    fn deliver(&self, to: To<'_>, message: Message) {
        let mut inner = lock(&self.inner);
        let mut delivered = false;
        for socket in &inner.sockets {
            let wanted = match to {
                To::Sid(None) => true,
                To::Sid(Some(sid)) => socket.sid == sid,
                To::Conn(conn) => socket.conn == conn,
            };
            if wanted {
                delivered |= socket.tx.send(message.clone()).is_ok();
            }
        }
        if !delivered {
            return;
        }
        if let Some(left) = inner.drop_after {
            if left <= 1 {
                inner.drop_after = None;
                close_all(&mut inner);
            } else {
                inner.drop_after = Some(left - 1);
            }
        }
    }

    /// Arms `Fault::DropWebsockets`; zero closes every socket now.
    pub(crate) fn drop_after(&self, frames: usize) {
        let mut inner = lock(&self.inner);
        if frames == 0 {
            inner.drop_after = None;
            close_all(&mut inner);
        } else {
            inner.drop_after = Some(frames);
        }
    }

    pub(crate) fn close_all(&self) {
        close_all(&mut lock(&self.inner));
    }

    pub(crate) fn set_executing(&self, client: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.executing_client = client;
        inner.last_node = None;
    }

    pub(crate) fn set_last_node(&self, node: Option<String>) {
        lock(&self.inner).last_node = node;
    }

    /// Whether client `sid` announced `supports_preview_metadata` in its `feature_flags`.
    pub(crate) fn supports_preview_metadata(&self, sid: Option<&str>) -> bool {
        let Some(sid) = sid else {
            return false;
        };
        lock(&self.inner).sockets.iter().any(|s| {
            s.sid == sid
                && s.feature_flags
                    .as_ref()
                    .and_then(|f| f.get("supports_preview_metadata"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
        })
    }

    /// Adds a socket and sends what ComfyUI sends on connect: `status` with the `sid`, and,
    /// to the running prompt's client, the node it is executing. A socket reusing a `sid`
    /// replaces the older one, which stays open but hears nothing more, as in ComfyUI.
    fn register(
        &self,
        sid: &str,
        queue_remaining: usize,
        tx: mpsc::UnboundedSender<Message>,
    ) -> u64 {
        let (conn, reconnect_node) = {
            let mut inner = lock(&self.inner);
            inner.next_conn += 1;
            let conn = inner.next_conn;
            inner.sockets.retain(|s| s.sid != sid);
            inner.sockets.push(Socket {
                sid: sid.to_owned(),
                conn,
                tx,
                feature_flags: None,
            });
            let node = (inner.executing_client.as_deref() == Some(sid))
                .then(|| inner.last_node.clone())
                .flatten();
            (conn, node)
        };
        let status = json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": queue_remaining}}, "sid": sid}});
        self.deliver(To::Conn(conn), Message::Text(dumps(&status).into()));
        if let Some(node) = reconnect_node {
            let frame = json!({"type": "executing", "data": {"node": node}});
            self.deliver(To::Conn(conn), Message::Text(dumps(&frame).into()));
        }
        conn
    }

    /// Forgets a socket; only its own entry, so a newer socket with the same `sid` keeps
    /// hearing its frames. (ComfyUI pops by `sid`, silencing the newer socket when the older
    /// one closes late; the simulator does not reproduce that race.)
    fn unregister(&self, conn: u64) {
        lock(&self.inner).sockets.retain(|s| s.conn != conn);
    }

    fn set_feature_flags(&self, conn: u64, flags: Value) {
        if let Some(s) = lock(&self.inner)
            .sockets
            .iter_mut()
            .find(|s| s.conn == conn)
        {
            s.feature_flags = Some(flags);
        }
    }
}

fn close_all(inner: &mut HubInner) {
    for socket in inner.sockets.drain(..) {
        let _ = socket.tx.send(Message::Close(None));
    }
}

/// Runs one upgraded socket until either side closes it.
pub(crate) async fn serve_socket(
    shared: std::sync::Arc<crate::shared::Shared>,
    socket: WebSocket,
    sid: String,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = {
        let state = lock(&shared.state);
        shared.hub.register(&sid, state.queue.remaining(), tx)
    };
    // Ends with `true` when the hub closed the socket on purpose.
    let writer = async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                return true;
            }
        }
        false
    };
    let hub_shared = shared.clone();
    let reader = async move {
        let mut first = true;
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => {
                    let parsed: Option<Value> = serde_json::from_str(text.as_str()).ok();
                    let is_flags = parsed
                        .as_ref()
                        .and_then(|v| v.get("type"))
                        .and_then(Value::as_str)
                        == Some("feature_flags");
                    if first && is_flags {
                        let flags = parsed
                            .as_ref()
                            .and_then(|v| v.get("data"))
                            .cloned()
                            .unwrap_or_else(|| json!({}));
                        hub_shared.hub.set_feature_flags(conn, flags);
                        let reply =
                            json!({"type": "feature_flags", "data": crate::recorded::features()});
                        hub_shared
                            .hub
                            .deliver(To::Conn(conn), Message::Text(dumps(&reply).into()));
                    }
                    first = false;
                }
                Message::Close(_) => break,
                _ => first = false,
            }
        }
    };
    tokio::pin!(writer, reader);
    tokio::select! {
        closed = &mut writer => {
            if !closed {
                reader.await;
            }
        }
        () = &mut reader => {}
    }
    shared.hub.unregister(conn);
}
