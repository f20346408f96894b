//! Per-run webhooks, signed the Standard Webhooks way and retried with backoff.
//!
//! When a run with a `webhook` reaches a final state, its URL gets one `POST` of
//! `{"type": "run.finished", "timestamp": ..., "data": RUN}` (RUN as `GET /v1/runs/ID` shows
//! it) with `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,` and the base64 HMAC-SHA256 of `ID.TIMESTAMP.BODY` under the secret). A 2xx answer
//! delivers it; anything else (or no answer) is retried on [`retry_delay`]'s schedule, then
//! given up. What happened is kept in `JOBS/serve/hooks/ID.json`, so a restarted server does
//! not deliver twice and takes up the ones still owed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::runs::Runs;

/// A webhook secret: `whsec_` and base64 (the prefix is optional), decoded. Never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

impl Secret {
    pub fn parse(text: &str) -> Result<Secret, String> {
        let b64 = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the webhook secret is not `whsec_` and base64: {e}"))?;
        if bytes.len() < 16 {
            return Err("the webhook secret is shorter than 16 bytes".into());
        }
        Ok(Secret(bytes))
    }
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn signature(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(&secret.0) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// How long to wait before attempt `attempt` (0 is the first): at once, then 5 s, 30 s, 2 min,
/// 10 min, 30 min, 1 h, 3 h, with up to a tenth added at random by the caller. `None`: give up
/// (eight attempts over about 4.7 hours).
pub fn retry_delay(attempt: u32) -> Option<Duration> {
    const SCHEDULE: [u64; 8] = [0, 5, 30, 120, 600, 1800, 3600, 10800];
    SCHEDULE
        .get(attempt as usize)
        .map(|s| Duration::from_secs(*s))
}

/// Whether an answer ends the deliveries: a 2xx delivered it; 410 Gone says never again.
pub fn settled(status: u16) -> Option<&'static str> {
    match status {
        200..=299 => Some("delivered"),
        410 => Some("gone"),
        _ => None,
    }
}

/// The body sent for a finished run.
pub fn body(run: &Value, timestamp: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "run.finished", "timestamp": timestamp, "data": run}))
        .unwrap_or_default()
}

struct Pending {
    url: String,
    attempt: u32,
    due: Instant,
}

/// Webhooks owed: runs with a webhook whose delivery has not ended.
pub struct Hooks {
    pending: std::sync::Mutex<BTreeMap<String, Pending>>,
    secret: Option<Secret>,
    client: reqwest::Client,
}

impl Hooks {
    pub fn new(secret: Option<Secret>) -> Hooks {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Hooks {
            pending: Default::default(),
            secret,
            client,
        }
    }

    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Watches run `id` and delivers to `url` once it ends.
    pub fn add(&self, id: &str, url: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(id.to_owned()).or_insert(Pending {
                url: url.to_owned(),
                attempt: 0,
                due: Instant::now(),
            });
        }
    }

    /// Runs forever: every half second, each run owed a webhook whose attempt is due is looked
    /// at, and delivered to when it has ended.
    pub async fn run(self: Arc<Self>, runs: Arc<Runs>) {
        // Those owed from before a restart.
        for (id, url) in runs.owed_webhooks() {
            self.add(&id, &url);
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = Instant::now();
            let due: Vec<(String, String, u32)> = match self.pending.lock() {
                Ok(p) => p
                    .iter()
                    .filter(|(_, p)| p.due <= now)
                    .map(|(id, p)| (id.clone(), p.url.clone(), p.attempt))
                    .collect(),
                Err(_) => return,
            };
            for (id, url, attempt) in due {
                let Some(run) = runs.get(&id) else {
                    self.finish(&runs, &id, "the run is gone");
                    continue;
                };
                if !super::runs::is_final(&run) {
                    if let Ok(mut p) = self.pending.lock()
                        && let Some(p) = p.get_mut(&id)
                    {
                        p.due = now + Duration::from_millis(500);
                    }
                    continue;
                }
                let outcome = self.deliver(&id, &url, &run).await;
                match outcome {
                    Ok(done) => self.finish(&runs, &id, done),
                    Err(why) => {
                        let next = attempt + 1;
                        match retry_delay(next) {
                            Some(d) => {
                                let jitter = d.mul_f64(fastrand::f64() / 10.0);
                                tracing::info!(run = %id, attempt = next, %why, "webhook not delivered; retrying in {:?}", d + jitter);
                                if let Ok(mut p) = self.pending.lock()
                                    && let Some(p) = p.get_mut(&id)
                                {
                                    p.attempt = next;
                                    p.due = Instant::now() + d + jitter;
                                }
                            }
                            None => {
                                tracing::warn!(run = %id, %why, "webhook not delivered after {next} attempts; giving up");
                                self.finish(&runs, &id, "given up");
                            }
                        }
                    }
                }
            }
        }
    }

    fn finish(&self, runs: &Runs, id: &str, outcome: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(id);
        }
        runs.webhook_ended(id, outcome);
    }

    /// One attempt: `Ok` when it ended deliveries, `Err(why)` to retry.
    async fn deliver(&self, id: &str, url: &str, run: &Value) -> Result<&'static str, String> {
        let Some(secret) = &self.secret else {
            return Ok("no secret configured");
        };
        let timestamp = crate::runner::now_ms() / 1000;
        let msg_id = format!("msg_{id}");
        let body = body(run, timestamp);
        let sig = signature(secret, &msg_id, timestamp, &body);
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let status = resp.status().as_u16();
        settled(status).ok_or_else(|| format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            signature(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(Secret::parse("whsec_not base64!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err(), "too short");
        assert_eq!(format!("{secret:?}"), "Secret(<hidden>)");
    }

    #[test]
    fn retries_back_off_and_end() {
        let delays: Vec<u64> = (0..).map_while(retry_delay).map(|d| d.as_secs()).collect();
        assert_eq!(delays, [0, 5, 30, 120, 600, 1800, 3600, 10800]);
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "each wait longer");
        assert_eq!(retry_delay(8), None);
        assert_eq!(retry_delay(u32::MAX), None);
        assert_eq!(settled(200), Some("delivered"));
        assert_eq!(settled(204), Some("delivered"));
        assert_eq!(settled(410), Some("gone"));
        for s in [301, 400, 404, 429, 500, 503] {
            assert_eq!(settled(s), None, "{s} is retried");
        }
    }
}
