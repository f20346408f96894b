//! The GC-like stall: once armed, the next HTTP request starts a window during which no request
//! is answered (ComfyUI's periodic `gc.collect()` holds the GIL for about 0.3 s).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Default)]
pub(crate) struct Stall {
    inner: Mutex<StallState>,
}

#[derive(Default)]
struct StallState {
    armed: VecDeque<Duration>,
    until: Option<Instant>,
}

impl Stall {
    pub(crate) fn arm(&self, length: Duration) {
        crate::shared::lock(&self.inner).armed.push_back(length);
    }

    /// Waits out a running stall, starting an armed one first.
    pub(crate) async fn wait(&self) {
        let until = {
            let mut state = crate::shared::lock(&self.inner);
            let now = Instant::now();
            let running = state.until.is_some_and(|u| u > now);
            if !running && let Some(length) = state.armed.pop_front() {
                state.until = Some(now + length);
            }
            state.until
        };
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}
