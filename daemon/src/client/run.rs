//! Running one prompt from submission to every output, the way ComfyUI must be driven.
//!
//! 1. Connect the websocket with a client id *before* submitting: execution events go only to
//!    the socket whose id equals the prompt's `client_id`.
//! 2. Submit with that client id and a prompt id chosen here, so events that arrive before the
//!    HTTP answer are already recognisable.
//! 3. Follow the events to `executing {node: null}` for the prompt. A fully cached run sends no
//!    `executing` frames for nodes and still ends that way, and is a success.
//! 4. If the socket drops, reconnect with the same client id and check `/history`, which may
//!    already hold the end; a prompt in neither the queue nor the history was lost (restart).
//! 5. Reconcile with `/history/ID`: outputs can land there after the success event, so it is
//!    polled until the entry is complete.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Client, ClientError, Event, ExecutionError, HistoryEntry, OutputFile, Submitted};

/// How a prompt ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed(ExecutionError),
    Interrupted { node_id: String, node_type: String },
}

/// Options of [`Client::run_prompt`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Client id for the websocket and the prompt; a new one when `None`.
    pub client_id: Option<String>,
    /// Prompt id to submit with; a new one when `None`.
    pub prompt_id: Option<String>,
    /// Longest the run may take, queueing included; the prompt is then interrupted.
    pub timeout: Option<Duration>,
    /// How long to wait for `/history` to hold a finished entry after the end event.
    pub history_wait: Duration,
    /// Attempts to reconnect a dropped websocket before giving up.
    pub reconnects: u32,
    /// `extra_data` for the prompt (ComfyUI stores it in the history).
    pub extra_data: Option<Value>,
    /// Follow the prompt through this shared websocket instead of opening one for it.
    pub hub: Option<super::Hub>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            client_id: None,
            prompt_id: None,
            timeout: None,
            history_wait: Duration::from_secs(10),
            reconnects: 20,
            extra_data: None,
            hub: None,
        }
    }
}

/// Where the time went.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct RunTimings {
    /// Submission to `execution_start`: time spent queued.
    pub queue_wait: Duration,
    /// `execution_start` to the end.
    pub execution: Duration,
    /// Connect to the reconciled history.
    pub total: Duration,
    /// Each executed node, from its `executing` frame to the next.
    pub nodes: Vec<(String, Duration)>,
}

/// Everything known about a finished prompt.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub prompt_id: String,
    pub client_id: String,
    /// ComfyUI's answer to the submission (`node_errors` of outputs that did not run).
    pub submitted: Submitted,
    pub outcome: Outcome,
    /// Nodes served from the cache.
    pub cached: Vec<String>,
    /// Nodes executed, in order.
    pub executed: Vec<String>,
    /// The job's output files, of every kind (`images`, `gifs`, `audio`, ...): the entries of
    /// type `output`, what SaveImage-like nodes wrote ([`super::FileRef::is_job_output`]).
    pub files: Vec<OutputFile>,
    /// Files the server listed that are not results of the job: `temp` previews
    /// (PreviewImage) and `input` entries (files already in ComfyUI's input folder). Each can
    /// be fetched with its own type while the server keeps it; the daemon does not.
    pub previews: Vec<OutputFile>,
    /// Outputs that are not files: `(node, kind, value)`.
    pub data: Vec<(String, String, Value)>,
    pub history: Option<HistoryEntry>,
    pub timings: RunTimings,
    /// How often the websocket had to be reconnected.
    pub reconnects: u32,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Success
    }
}

/// Progress of a run while it is being followed.
struct Follow {
    prompt_id: String,
    started: Option<Instant>,
    ended: Option<Instant>,
    outcome: Option<Outcome>,
    cached: Vec<String>,
    executed: Vec<String>,
    current: Option<(String, Instant)>,
    nodes: Vec<(String, Duration)>,
    event_files: Vec<OutputFile>,
}

impl Follow {
    fn new(prompt_id: &str) -> Self {
        Follow {
            prompt_id: prompt_id.to_owned(),
            started: None,
            ended: None,
            outcome: None,
            cached: Vec::new(),
            executed: Vec::new(),
            current: None,
            nodes: Vec::new(),
            event_files: Vec::new(),
        }
    }

    /// Takes one event; true when the prompt has ended.
    fn take(&mut self, event: &Event, now: Instant) -> bool {
        let mine = event.prompt_id().is_some_and(|p| p == self.prompt_id);
        match event {
            // The first start counts: a history replay at the end must not move it.
            Event::ExecutionStart { .. } if mine => {
                self.started.get_or_insert(now);
            }
            Event::ExecutionCached { nodes, .. } if mine => {
                self.cached.extend(nodes.iter().cloned())
            }
            Event::Executing { node, prompt_id } => {
                // After a reconnect ComfyUI repeats the running node without a prompt id.
                if !(mine || (prompt_id.is_none() && self.started.is_some())) {
                    return false;
                }
                if let Some((n, t)) = self.current.take() {
                    self.nodes.push((n, now - t));
                }
                match node {
                    Some(n) => {
                        if !self.executed.contains(n) {
                            self.executed.push(n.clone());
                        }
                        self.current = Some((n.clone(), now));
                    }
                    None if mine => {
                        self.ended = Some(now);
                        self.outcome.get_or_insert(Outcome::Success);
                        return true;
                    }
                    None => {}
                }
            }
            Event::Executed {
                node,
                display_node,
                output,
                ..
            } if mine => {
                let meta = match display_node {
                    Some(d) => serde_json::json!({ node.as_str(): {"display_node": d} }),
                    None => Value::Null,
                };
                let entry = HistoryEntry {
                    prompt: Value::Null,
                    outputs: [(
                        node.clone(),
                        serde_json::from_value(output.clone()).unwrap_or_default(),
                    )]
                    .into(),
                    status: None,
                    meta,
                };
                for f in entry.files() {
                    if !self.event_files.contains(&f) {
                        self.event_files.push(f);
                    }
                }
            }
            Event::ExecutionSuccess { .. } if mine => {
                self.outcome = Some(Outcome::Success);
            }
            Event::ExecutionError(e) if mine => self.outcome = Some(Outcome::Failed(e.clone())),
            Event::ExecutionInterrupted {
                node_id, node_type, ..
            } if mine => {
                self.outcome = Some(Outcome::Interrupted {
                    node_id: node_id.clone(),
                    node_type: node_type.clone(),
                });
            }
            _ => {}
        }
        false
    }

    /// Takes the end from a finished history entry, when the socket missed it. An entry with
    /// a null status has ended too, but says nothing of how: the outcome stays unknown unless
    /// the socket told it (see [`Client::unrecorded_outcome`]).
    fn take_history(&mut self, entry: &HistoryEntry, now: Instant) -> bool {
        if !entry.finished() {
            return false;
        }
        let Some(status) = &entry.status else {
            self.started.get_or_insert(now);
            self.ended = Some(now);
            return true;
        };
        for (name, data) in &status.messages {
            let event =
                match serde_json::to_string(&serde_json::json!({"type": name, "data": data})) {
                    Ok(t) => Event::from_text(&t).ok(),
                    Err(_) => None,
                };
            if let Some(e) = event {
                self.take(&e, now);
            }
        }
        self.started.get_or_insert(now);
        self.ended = Some(now);
        if self.outcome.is_none() {
            self.outcome = Some(if status.status_str == "success" {
                Outcome::Success
            } else {
                interrupted_unknown()
            });
        }
        true
    }
}

fn interrupted_unknown() -> Outcome {
    Outcome::Interrupted {
        node_id: String::new(),
        node_type: String::new(),
    }
}

impl Client {
    /// Runs `prompt` (an API graph) to the end and reports every output. `on_event` sees every
    /// event of the socket, for progress display.
    pub async fn run_prompt(
        &self,
        prompt: &Value,
        opts: &RunOptions,
        on_event: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<RunReport, ClientError> {
        let t0 = Instant::now();
        let prompt_id = opts
            .prompt_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // A timeout too large to add to the clock is no deadline at all.
        let deadline = opts.timeout.and_then(|t| t0.checked_add(t));

        let (client_id, mut source) = match &opts.hub {
            Some(hub) => {
                // Not up within a second: ComfyUI is away; the caller waits and retries
                // (unless it refused us for good: then that is the error).
                if !hub.ready(Duration::from_secs(1)).await {
                    if let Some(e) = hub.refused() {
                        return Err(e);
                    }
                    return Err(ClientError::Unreachable {
                        url: self.url().to_owned(),
                        reason: "the event socket is not connected".into(),
                    });
                }
                let sub = hub.subscribe(&prompt_id);
                (hub.client_id().to_owned(), Source::Hub(sub))
            }
            None => {
                let client_id = opts
                    .client_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
                let socket = self.connect(&client_id).await?;
                (client_id, Source::Own(Some(Box::new(socket))))
            }
        };
        let submitted = self
            .submit(
                prompt,
                &client_id,
                Some(&prompt_id),
                opts.extra_data.as_ref(),
            )
            .await?;
        let submitted_at = Instant::now();
        let prompt_id = submitted.prompt_id.clone();
        let mut follow = Follow::new(&prompt_id);
        let mut reconnects = 0u32;

        'run: loop {
            if let Source::Own(socket @ None) = &mut source {
                // Reconnect, then see whether the end already happened.
                if reconnects >= opts.reconnects {
                    return Err(ClientError::Websocket {
                        url: self.url().to_owned(),
                        reason: format!("gave up after {reconnects} reconnects"),
                    });
                }
                reconnects += 1;
                tokio::time::sleep(backoff(reconnects)).await;
                match self.connect(&client_id).await {
                    Ok(s) => *socket = Some(Box::new(s)),
                    Err(e) if e.is_transient() => {
                        self.check_deadline(deadline, &prompt_id, opts).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                if self.ended_meanwhile(&prompt_id, &mut follow).await? {
                    break 'run;
                }
                continue;
            }
            // Wake at the deadline, or after a quiet spell to check the prompt still exists
            // (it may have been deleted from the queue, or ended while a frame was lost).
            let quiet = Instant::now() + QUIET_CHECK;
            let wake = deadline.map_or(quiet, |d| d.min(quiet));
            let next = match tokio::time::timeout_at(wake.into(), source.next()).await {
                Ok(n) => n,
                Err(_) => {
                    self.check_deadline(deadline, &prompt_id, opts).await?;
                    if let Ok(Some(entry)) = self.history(&prompt_id).await {
                        if follow.take_history(&entry, Instant::now()) {
                            break 'run;
                        }
                    } else if matches!(self.gone(&prompt_id).await, Ok(true)) {
                        return Err(ClientError::Lost { prompt_id });
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(event)) => {
                    on_event(&event);
                    if follow.take(&event, Instant::now()) {
                        break 'run;
                    }
                }
                // A frame that does not parse is reported and skipped.
                Some(Err(ClientError::Protocol { reason, .. })) => {
                    tracing::warn!(%reason, "skipping a websocket frame");
                }
                Some(Err(_)) | None => match &mut source {
                    Source::Own(socket) => {
                        tracing::warn!(prompt_id, "websocket closed during the run; reconnecting");
                        if let Some(s) = socket.take() {
                            s.close().await;
                        }
                    }
                    Source::Hub(_) => {
                        // The hub reconnects by itself; frames may have been lost meanwhile.
                        reconnects += 1;
                        if self.ended_meanwhile(&prompt_id, &mut follow).await? {
                            break 'run;
                        }
                    }
                },
            }
        }
        if let Source::Own(Some(s)) = source {
            s.close().await;
        }

        // Reconcile: outputs may reach the history after the end event.
        let history = self
            .settled_history(&prompt_id, &follow, opts.history_wait)
            .await?;
        let mut files = history
            .as_ref()
            .map(HistoryEntry::files)
            .unwrap_or_default();
        for f in &follow.event_files {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
        let (files, previews) = split_files(files);
        let data = history.as_ref().map(HistoryEntry::data).unwrap_or_default();
        let outcome = match follow.outcome.take() {
            Some(o) => o,
            None => self.unrecorded_outcome(&prompt_id, history.as_ref()).await,
        };
        let started = follow.started.unwrap_or(submitted_at);
        let ended = follow.ended.unwrap_or_else(Instant::now);
        let cached: Vec<String> = follow
            .cached
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(RunReport {
            prompt_id,
            client_id,
            submitted,
            outcome,
            cached,
            executed: follow.executed,
            files,
            previews,
            data,
            history,
            timings: RunTimings {
                queue_wait: started.saturating_duration_since(submitted_at),
                execution: ended.saturating_duration_since(started),
                total: t0.elapsed(),
                nodes: follow.nodes,
            },
            reconnects,
        })
    }

    /// After events may have been missed: whether the history holds the end; `Lost` when
    /// ComfyUI has the prompt neither queued nor in its history.
    async fn ended_meanwhile(
        &self,
        prompt_id: &str,
        follow: &mut Follow,
    ) -> Result<bool, ClientError> {
        if let Some(entry) = self.history(prompt_id).await?
            && follow.take_history(&entry, Instant::now())
        {
            return Ok(true);
        }
        if self.gone(prompt_id).await? {
            return Err(ClientError::Lost {
                prompt_id: prompt_id.to_owned(),
            });
        }
        Ok(false)
    }

    /// Whether ComfyUI has the prompt neither queued nor in its history, asked several times
    /// over a second: a prompt that just finished can be in neither for a moment (it leaves
    /// the queue before its history entry is written), and calling such a prompt lost would
    /// submit it twice.
    async fn gone(&self, prompt_id: &str) -> Result<bool, ClientError> {
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if self.queue().await?.contains(prompt_id) || self.history(prompt_id).await?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Follows a prompt that was submitted earlier, by this process before a restart or by a
    /// daemon whose job was taken over, without submitting anything: its end is read from
    /// `/history` (events go only to the socket that submitted it). `Lost` when ComfyUI has it
    /// neither queued nor in its history: it restarted, and the prompt must be submitted again.
    pub async fn await_prompt(
        &self,
        prompt_id: &str,
        poll: Duration,
        timeout: Option<Duration>,
    ) -> Result<RunReport, ClientError> {
        let t0 = Instant::now();
        let deadline = timeout.and_then(|t| t0.checked_add(t));
        let mut follow = Follow::new(prompt_id);
        let opts = RunOptions {
            timeout,
            ..RunOptions::default()
        };
        let entry = loop {
            if let Some(entry) = self.history(prompt_id).await?
                && follow.take_history(&entry, Instant::now())
            {
                break entry;
            }
            if !self.queue().await?.contains(prompt_id) && self.gone(prompt_id).await? {
                return Err(ClientError::Lost {
                    prompt_id: prompt_id.to_owned(),
                });
            }
            self.check_deadline(deadline, prompt_id, &opts).await?;
            tokio::time::sleep(poll).await;
        };
        let history = self
            .settled_history(prompt_id, &follow, opts.history_wait)
            .await?
            .or(Some(entry));
        let (files, previews) = split_files(
            history
                .as_ref()
                .map(HistoryEntry::files)
                .unwrap_or_default(),
        );
        let data = history.as_ref().map(HistoryEntry::data).unwrap_or_default();
        let outcome = match follow.outcome.take() {
            Some(o) => o,
            None => self.unrecorded_outcome(prompt_id, history.as_ref()).await,
        };
        Ok(RunReport {
            prompt_id: prompt_id.to_owned(),
            client_id: String::new(),
            submitted: Submitted {
                prompt_id: prompt_id.to_owned(),
                number: 0.0,
                node_errors: Default::default(),
            },
            outcome,
            cached: follow.cached,
            executed: follow.executed,
            files,
            previews,
            data,
            history,
            timings: RunTimings {
                total: t0.elapsed(),
                ..RunTimings::default()
            },
            reconnects: 0,
        })
    }

    /// Past the deadline: interrupt (or unqueue) the prompt and fail the run.
    async fn check_deadline(
        &self,
        deadline: Option<Instant>,
        prompt_id: &str,
        opts: &RunOptions,
    ) -> Result<(), ClientError> {
        let Some(d) = deadline else { return Ok(()) };
        if Instant::now() < d {
            return Ok(());
        }
        if let Err(e) = self.cancel(prompt_id).await {
            tracing::warn!(prompt_id, error = %e, "could not cancel the timed-out prompt");
        }
        Err(ClientError::RunTimeout {
            prompt_id: prompt_id.to_owned(),
            after: opts.timeout.unwrap_or_default(),
        })
    }

    /// How a prompt ended when neither the socket nor the history said (its entry's status is
    /// null): the jobs API's answer where the server has one, else a success when it left
    /// outputs and an interruption of unknown cause when it left none.
    async fn unrecorded_outcome(&self, prompt_id: &str, history: Option<&HistoryEntry>) -> Outcome {
        if let Ok(Some(job)) = self.job(prompt_id).await
            && let Some(outcome) = outcome_of_job(&job)
        {
            return outcome;
        }
        if history.is_some_and(|h| !h.outputs.is_empty()) {
            Outcome::Success
        } else {
            interrupted_unknown()
        }
    }

    /// Polls `/history/ID` until the entry is finished and holds at least the outputs the
    /// events announced, or `wait` passes (then the last entry seen, if any).
    async fn settled_history(
        &self,
        prompt_id: &str,
        follow: &Follow,
        wait: Duration,
    ) -> Result<Option<HistoryEntry>, ClientError> {
        let until = Instant::now() + wait;
        let mut delay = Duration::from_millis(20);
        let mut last = None;
        loop {
            match self.history(prompt_id).await {
                Ok(Some(entry)) => {
                    let done = entry.finished();
                    let files = entry.files();
                    let complete = follow.event_files.iter().all(|f| files.contains(f));
                    if done && complete {
                        return Ok(Some(entry));
                    }
                    last = Some(entry);
                }
                Ok(None) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= until {
                return Ok(last);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
}

/// The job's files and the rest ([`RunReport::files`], [`RunReport::previews`]).
fn split_files(files: Vec<OutputFile>) -> (Vec<OutputFile>, Vec<OutputFile>) {
    files.into_iter().partition(|f| f.file.is_job_output())
}

/// What `GET /api/jobs/{id}` says of how a job ended; `None` while it has not, or for a status
/// this client does not know.
pub(crate) fn outcome_of_job(job: &Value) -> Option<Outcome> {
    match job.get("status")?.as_str()? {
        "completed" => Some(Outcome::Success),
        "cancelled" => Some(interrupted_unknown()),
        "failed" => {
            let error = job
                .get("execution_error")
                .and_then(|e| serde_json::from_value::<ExecutionError>(e.clone()).ok())
                .unwrap_or_else(|| ExecutionError {
                    prompt_id: job
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    node_id: String::new(),
                    node_type: String::new(),
                    exception_message: "ComfyUI reports the job failed, without the error".into(),
                    exception_type: String::new(),
                    traceback: Vec::new(),
                    executed: Vec::new(),
                });
            Some(Outcome::Failed(error))
        }
        _ => None,
    }
}

/// Where a run's events come from: its own socket (absent while reconnecting), or the
/// daemon's shared one.
enum Source {
    Own(Option<Box<super::EventStream>>),
    Hub(super::hub::Subscription),
}

impl Source {
    async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        match self {
            Source::Own(Some(s)) => s.next().await,
            Source::Own(None) => None,
            Source::Hub(sub) => match sub.next().await? {
                super::hub::HubEvent::Event(e) => Some(Ok(e)),
                super::hub::HubEvent::Dropped => Some(Err(ClientError::Websocket {
                    url: String::new(),
                    reason: "the shared event socket dropped".into(),
                })),
            },
        }
    }
}

/// After this long without a frame, `run_prompt` checks that its prompt still exists.
const QUIET_CHECK: Duration = Duration::from_secs(2);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(5)).min(3000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_replay_at_the_end_keeps_the_start_the_socket_saw() {
        let id = "0b7a2f44-9c1e-4f4e-8a53-2d7c1f0e9a11";
        let mut f = Follow::new(id);
        let t0 = Instant::now();
        let start = Event::from_text(&format!(
            r#"{{"type": "execution_start", "data": {{"prompt_id": "{id}", "timestamp": 1}}}}"#
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        f.take(&start, t0);
        let entry: HistoryEntry = serde_json::from_value(serde_json::json!({
            "prompt": [], "outputs": {}, "meta": {},
            "status": {"status_str": "success", "completed": true, "messages": [
                ["execution_start", {"prompt_id": id, "timestamp": 1}],
                ["execution_success", {"prompt_id": id, "timestamp": 2}]
            ]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let end = t0 + Duration::from_secs(19);
        assert!(f.take_history(&entry, end));
        assert_eq!(f.started, Some(t0), "the replayed start moved the real one");
        assert_eq!(f.ended, Some(end));
    }

    #[test]
    fn a_null_status_ends_the_follow_without_an_outcome() {
        let mut f = Follow::new("p");
        let entry: HistoryEntry = serde_json::from_value(serde_json::json!({
            "outputs": {"3": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
            "status": null, "meta": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(f.take_history(&entry, Instant::now()));
        assert!(f.ended.is_some() && f.outcome.is_none());
    }

    #[test]
    fn the_jobs_status_gives_the_outcome() {
        use serde_json::json;
        assert_eq!(
            outcome_of_job(&json!({"status": "completed"})),
            Some(Outcome::Success)
        );
        assert_eq!(
            outcome_of_job(&json!({"status": "cancelled"})),
            Some(interrupted_unknown())
        );
        match outcome_of_job(
            &json!({"status": "failed", "execution_error": {"node_id": "2", "exception_message": "boom"}}),
        ) {
            Some(Outcome::Failed(e)) => assert_eq!(
                (e.node_id.as_str(), e.exception_message.as_str()),
                ("2", "boom")
            ),
            other => panic!("{other:?}"),
        }
        match outcome_of_job(&json!({"id": "p", "status": "failed", "execution_error": null})) {
            Some(Outcome::Failed(e)) => assert!(e.exception_message.contains("failed"), "{e:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(outcome_of_job(&json!({"status": "in_progress"})), None);
        assert_eq!(outcome_of_job(&json!({})), None);
    }

    #[test]
    fn temp_and_input_entries_are_not_job_files() {
        let file = |kind: &str| OutputFile {
            node: "1".into(),
            kind: "images".into(),
            animated: false,
            file: super::super::FileRef {
                filename: format!("{kind}.png"),
                subfolder: String::new(),
                kind: kind.into(),
            },
        };
        let (kept, previews) = split_files(vec![file("output"), file("temp"), file("input")]);
        assert_eq!(kept, [file("output")]);
        assert_eq!(previews, [file("temp"), file("input")]);
    }
}
