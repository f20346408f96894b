//! One websocket for many prompts: the daemon keeps a single connection to its ComfyUI and
//! routes each event to the prompt it belongs to.
//!
//! ComfyUI sends a prompt's execution events only to the socket whose client id submitted it,
//! so every prompt the daemon submits carries the hub's client id. The hub reconnects by itself
//! when the socket drops and tells every waiting prompt, which then reads its end from
//! `/history` (frames sent while the socket was down are lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{Client, ClientError, Event};

/// What a subscription receives.
#[derive(Debug, Clone)]
pub enum HubEvent {
    Event(Event),
    /// The socket dropped: events may have been missed.
    Dropped,
}

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<HubEvent>>>>;

/// The socket's state.
#[derive(Debug, Clone)]
enum Link {
    Up,
    Down,
    /// The last attempt failed in a way retrying will not fix (a refused certificate, a 401);
    /// the hub keeps trying, but prompts fail with this instead of waiting.
    Refused(ClientError),
}

/// The shared websocket; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    client_id: String,
    routes: Routes,
    connected: watch::Receiver<Link>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("client_id", &self.client_id)
            .field("link", &*self.connected.borrow())
            .finish()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// Events of one prompt, until dropped.
#[derive(Debug)]
pub struct Subscription {
    prompt_id: String,
    rx: mpsc::UnboundedReceiver<HubEvent>,
    routes: Routes,
}

impl Subscription {
    /// The next event or drop notice; `None` once the hub is gone.
    pub async fn next(&mut self) -> Option<HubEvent> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut r) = self.routes.lock() {
            r.remove(&self.prompt_id);
        }
    }
}

impl Hub {
    /// Starts the hub's connection task (it connects, and reconnects, on its own).
    pub fn start(client: Client) -> Hub {
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let routes: Routes = Arc::default();
        let (tx, connected) = watch::channel(Link::Down);
        let task = tokio::spawn(run(client, client_id.clone(), routes.clone(), tx));
        Hub {
            client_id,
            routes,
            connected,
            task: Arc::new(task),
        }
    }

    /// The client id every prompt routed through the hub must be submitted with.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Waits until the socket is up, at most `wait`.
    pub async fn ready(&self, wait: Duration) -> bool {
        let mut rx = self.connected.clone();
        matches!(
            tokio::time::timeout(wait, rx.wait_for(|l| matches!(l, Link::Up))).await,
            Ok(Ok(_))
        )
    }

    /// Why the socket cannot connect, when waiting will not help.
    pub fn refused(&self) -> Option<ClientError> {
        match &*self.connected.borrow() {
            Link::Refused(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Routes `prompt_id`'s events to the returned subscription. Subscribe before submitting:
    /// events can arrive before the HTTP answer.
    pub fn subscribe(&self, prompt_id: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut r) = self.routes.lock() {
            r.insert(prompt_id.to_owned(), tx);
        }
        Subscription {
            prompt_id: prompt_id.to_owned(),
            rx,
            routes: self.routes.clone(),
        }
    }
}

async fn run(client: Client, client_id: String, routes: Routes, connected: watch::Sender<Link>) {
    let mut attempt = 0u32;
    loop {
        let mut ws = match client.connect(&client_id).await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::debug!(error = %e, "the event socket cannot connect yet");
                let _ = connected.send(if e.is_transient() {
                    Link::Down
                } else {
                    Link::Refused(e)
                });
                attempt += 1;
                tokio::time::sleep(Duration::from_millis((100u64 << attempt.min(5)).min(3000)))
                    .await;
                continue;
            }
        };
        attempt = 0;
        let _ = connected.send(Link::Up);
        // The prompt ComfyUI is executing: a repeated `executing` frame after a reconnect
        // comes without a prompt id.
        let mut current: Option<String> = None;
        loop {
            match ws.next().await {
                Some(Ok(event)) => {
                    if let Event::ExecutionStart { prompt_id, .. } = &event {
                        current = Some(prompt_id.clone());
                    }
                    let target = event
                        .prompt_id()
                        .map(str::to_owned)
                        .or_else(|| match &event {
                            Event::Executing { .. } | Event::Progress { .. } => current.clone(),
                            _ => None,
                        });
                    if let Some(t) = target
                        && let Ok(r) = routes.lock()
                        && let Some(tx) = r.get(&t)
                    {
                        let _ = tx.send(HubEvent::Event(event));
                    }
                }
                Some(Err(ClientError::Protocol { reason, .. })) => {
                    tracing::warn!(%reason, "skipping a websocket frame");
                }
                Some(Err(_)) | None => break,
            }
        }
        let _ = connected.send(Link::Down);
        tracing::warn!("the event socket to ComfyUI dropped; reconnecting");
        if let Ok(r) = routes.lock() {
            for tx in r.values() {
                let _ = tx.send(HubEvent::Dropped);
            }
        }
    }
}
