//! The one serial worker, like ComfyUI's `prompt_worker`: takes the next prompt, runs its nodes
//! in ComfyUI's order with ComfyUI's frames, writes the history entry, and applies `/free`
//! between prompts.
//!
//! Frame order per prompt (see `ws_success.jsonl`): `status` (taken), `execution_start`,
//! `execution_cached`; per executed node `progress_state`, `executing`, step `progress_state`/
//! `progress`, `executed` for outputs, `progress_state`; then `execution_success` (or
//! `execution_error`/`execution_interrupted`), `status`, and `executing` with `node: null`.
//! As in ComfyUI, `executing`/`executed`/`execution_start|cached|success` go only to the
//! prompt's client, while `progress_state`, `progress`, binary frames, errors and interrupts
//! are addressed to the client id, which means every socket when the prompt has none.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::cache::{Cache, Cached, signatures};
use crate::config::Protocol;
use crate::fault::NodeFault;
use crate::history::Finished;
use crate::memory::{Shortfall, torch_message};
use crate::nodes::{Event, Failure, Node, Produced, Val, evaluate, execute_traceback};
use crate::order::{ExecutionList, link};
use crate::progress::Progress;
use crate::queue::{FreeFlags, QueueItem};
use crate::recorded::{MODEL_INPUTS, OOM_TIPS};
use crate::shared::{Shared, lock};
use crate::timeline::TimelineEvent;

/// Binary frame types (`protocol.BinaryEventTypes`).
const PREVIEW_IMAGE: u32 = 1;
const TEXT: u32 = 3;
const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

/// Runs prompts until the task is aborted (`Sim::go_down`, shutdown).
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut executor = Executor::default();
    loop {
        let item = next_item(&shared, &mut executor).await;
        executor.run_prompt(&shared, item).await;
    }
}

async fn next_item(shared: &Shared, executor: &mut Executor) -> QueueItem {
    loop {
        {
            let mut state = lock(&shared.state);
            let flags = state.queue.take_flags();
            if flags.unload_models || flags.free_memory {
                state.device.unload_all();
            }
            executor.free(flags);
            if let Some(item) = state.queue.get() {
                shared.queue_updated(&state);
                return item;
            }
        }
        shared.work.notified().await;
    }
}

/// What survives between prompts: the cache, the loaded models, PreviewImage's prefixes.
#[derive(Default)]
struct Executor {
    cache: Cache,
    /// Model folder → the model loaded from it.
    resident: BTreeMap<String, String>,
    /// Node id → (class, `ComfyUI_temp_xxxxx`), like ComfyUI's per-node objects.
    previews: HashMap<String, (String, String)>,
}

/// Why a prompt stopped early.
enum Stop {
    Error {
        node: String,
        failure: Failure,
        inputs: Map<String, Value>,
    },
    Interrupted {
        node: String,
    },
}

/// Frames, history messages and progress of the running prompt.
struct Run<'a> {
    shared: &'a Shared,
    item: &'a QueueItem,
    client: Option<String>,
    progress: Progress,
    messages: Vec<Value>,
    executed: Vec<String>,
    /// Nodes actually run (not replayed from the cache) in this prompt.
    ran: HashSet<String>,
    ui_outputs: Vec<(String, Value)>,
    /// It failed with an out-of-memory error.
    oom: bool,
}

impl Run<'_> {
    fn sid(&self) -> Option<&str> {
        self.client.as_deref()
    }

    fn send(&self, frame: &Value) {
        self.shared.hub.send(self.sid(), frame);
    }

    /// `PromptExecutor.add_message`: kept for history, sent to the client (or everyone when
    /// `broadcast` and there is no client).
    fn message(&mut self, event: &str, mut data: Value, broadcast: bool) {
        if let Some(map) = data.as_object_mut() {
            map.insert("timestamp".to_owned(), json!(now_ms()));
        }
        if self.client.is_some() || broadcast {
            self.send(&json!({"type": event, "data": data}));
        }
        self.messages.push(json!([event, data]));
    }

    fn progress_state(&self) {
        self.send(&self.progress.frame());
    }

    fn executed(&mut self, node: &str, output: Option<&Value>) {
        if self.client.is_some() {
            let display = display_node(self.shared.protocol, node);
            let frame = json!({"type": "executed", "data": {"node": node, "display_node": display, "output": output, "prompt_id": self.item.prompt_id}});
            self.send(&frame);
        }
        if let Some(ui) = output {
            self.ui_outputs.push((node.to_owned(), ui.clone()));
        }
    }

    fn record(&self, event: TimelineEvent) {
        self.shared.timeline.record(&self.item.prompt_id, event);
    }

    fn class_of(&self, node: &str) -> String {
        self.item
            .prompt
            .get(node)
            .and_then(|n| n.get("class_type"))
            .map(crate::pyjson::str)
            .unwrap_or_default()
    }

    fn node_inputs(&self, node: &str) -> Map<String, Value> {
        self.item
            .prompt
            .get(node)
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    /// A sampler step or a preview: `progress_state`, then `progress`, with the preview image
    /// in whichever binary form the client asked for.
    fn step(&mut self, node: &str, value: u64, max: u64, png: Option<&[u8]>) {
        self.progress.update(node, value, max);
        self.progress_state();
        let with_metadata = self.shared.hub.supports_preview_metadata(self.sid());
        if let (Some(png), true) = (png, with_metadata) {
            let metadata = json!({
                "node_id": node, "prompt_id": self.item.prompt_id, "display_node_id": node,
                "parent_node_id": null, "real_node_id": node, "image_type": "image/png",
            });
            let metadata = crate::pyjson::dumps(&metadata).into_bytes();
            let mut payload = u32::try_from(metadata.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes()
                .to_vec();
            payload.extend_from_slice(&metadata);
            payload.extend_from_slice(png);
            self.shared
                .hub
                .send_binary(self.sid(), PREVIEW_IMAGE_WITH_METADATA, &payload);
        }
        self.send(&json!({"type": "progress", "data": {"value": value, "max": max, "prompt_id": self.item.prompt_id, "node": node}}));
        if let (Some(png), false) = (png, with_metadata) {
            let mut payload = 2u32.to_be_bytes().to_vec();
            payload.extend_from_slice(png);
            self.shared
                .hub
                .send_binary(self.sid(), PREVIEW_IMAGE, &payload);
        }
    }
}

/// The node on the user's canvas a node's outputs show on. In 2026 mode a node of a subgraph
/// (`OUTER:INNER`, nested `OUTER:MID:INNER`, as front ends flatten subgraph instances) shows on
/// the outermost instance; NEWER.md says to map output keys through `display_node` but not
/// which node it names for nested subgraphs: the simulator names the one on the root canvas.
/// Recorded: the node itself, as 0.3.64 writes it.
pub(crate) fn display_node(protocol: Protocol, node: &str) -> &str {
    match (protocol, node.split_once(':')) {
        (Protocol::Y2026, Some((outer, _))) => outer,
        _ => node,
    }
}

/// `history[id].meta[node]`: `node_id`, `display_node`, `parent_node` (the enclosing subgraph
/// instance, null at the root) and `real_node_id`.
fn meta(protocol: Protocol, node: &str) -> Value {
    let parent = match protocol {
        Protocol::Y2026 => node.rsplit_once(':').map(|(parent, _)| parent),
        Protocol::Recorded => None,
    };
    json!({"node_id": node, "display_node": display_node(protocol, node), "parent_node": parent, "real_node_id": node})
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Executor {
    /// Applies `/free` flags: `unload_models` forgets the loaded models, `free_memory` also
    /// empties the cache (ComfyUI's `unload_all_models` and `PromptExecutor.reset`).
    fn free(&mut self, flags: FreeFlags) {
        if flags.unload_models || flags.free_memory {
            self.resident.clear();
        }
        if flags.free_memory {
            self.cache.clear();
            self.previews.clear();
        }
    }

    async fn run_prompt(&mut self, shared: &Shared, item: QueueItem) {
        let prompt_id = item.prompt_id.clone();
        shared.interrupt.store(false, Ordering::SeqCst);
        shared.hub.set_executing(item.client_id());
        let mut run = Run {
            shared,
            item: &item,
            client: item.client_id(),
            progress: Progress::new(&prompt_id),
            messages: Vec::new(),
            executed: Vec::new(),
            ran: HashSet::new(),
            ui_outputs: Vec::new(),
            oom: false,
        };
        let started_ms = item.started_ms;
        run.record(TimelineEvent::Started);
        run.message("execution_start", json!({"prompt_id": prompt_id}), false);

        let sigs = signatures(&item.prompt, &shared.dirs);
        self.cache.retain(&sigs.values().copied().collect());
        self.previews.retain(|id, (class, _)| {
            item.prompt
                .get(id)
                .and_then(|n| n.get("class_type"))
                .and_then(Value::as_str)
                == Some(class)
        });
        let cached: Vec<String> = item
            .prompt
            .keys()
            .filter(|id| sigs.get(*id).is_some_and(|s| self.cache.get(*s).is_some()))
            .cloned()
            .collect();
        run.record(TimelineEvent::Cached {
            nodes: cached.clone(),
        });
        run.message(
            "execution_cached",
            json!({"nodes": cached, "prompt_id": prompt_id}),
            false,
        );

        let cached: HashSet<String> = cached.into_iter().collect();
        let mut list = ExecutionList::new(&item.prompt, &shared.catalogue, &cached);
        for output in &item.outputs {
            list.add_node(output);
        }
        let mut stop = None;
        while let Some(node) = list.next() {
            let sig = sigs.get(&node).copied().unwrap_or_default();
            if let Some(hit) = self.cache.get(sig).cloned() {
                run.executed(&node, hit.ui.as_ref());
                run.progress.finish(&node);
                run.progress_state();
                run.executed.push(node.clone());
            } else if let Err(s) = self.execute(&mut run, &node, &sigs).await {
                stop = Some(s);
                break;
            }
            list.complete(&node);
        }

        let mut error = Value::Null;
        let outcome = match stop {
            None => {
                run.message("execution_success", json!({"prompt_id": prompt_id}), false);
                "success"
            }
            Some(Stop::Interrupted { node }) => {
                let data = json!({"prompt_id": prompt_id, "node_id": node, "node_type": run.class_of(&node), "executed": run.executed});
                run.message("execution_interrupted", data, true);
                "interrupted"
            }
            Some(Stop::Error {
                node,
                failure,
                inputs,
            }) => {
                run.oom = failure.exception_type == OOM_EXCEPTION;
                if run.oom && shared.memory.is_some() {
                    // ComfyUI: "Got an OOM, unloading all loaded models.", then the report.
                    lock(&shared.state).device.unload_all();
                }
                let data = json!({
                    "prompt_id": prompt_id,
                    "node_id": node,
                    "node_type": run.class_of(&node),
                    "executed": run.executed,
                    "exception_message": failure.message,
                    "exception_type": failure.exception_type,
                    "traceback": failure.traceback,
                    "current_inputs": inputs,
                    "current_outputs": item.prompt.keys().collect::<Vec<_>>(),
                });
                error = data.clone();
                run.message("execution_error", data, true);
                "error"
            }
        };
        run.record(TimelineEvent::Finished {
            outcome: outcome.to_owned(),
        });
        tracing::info!(prompt_id = %prompt_id, outcome, "prompt finished");
        if run.oom {
            lock(&shared.memory_log).out_of_memory += 1;
        }
        let success = outcome == "success";
        let outputs: Map<String, Value> = run.ui_outputs.iter().cloned().collect();
        let meta: Map<String, Value> = run
            .ui_outputs
            .iter()
            .map(|(id, _)| (id.clone(), meta(shared.protocol, id)))
            .collect();
        let status = if lock(&shared.faults).take_null_status() {
            Value::Null
        } else {
            json!({
                "status_str": if success { "success" } else { "error" },
                "completed": success,
                "messages": run.messages,
            })
        };
        let entry = json!({
            "prompt": item.to_json(),
            "outputs": outputs,
            "status": status,
            "meta": meta,
        });
        let job = Finished {
            create_time: item.created_ms,
            start_time: started_ms,
            end_time: now_ms(),
            status: match outcome {
                "success" => "completed",
                "interrupted" => "cancelled",
                _ => "failed",
            },
            error,
        };
        let delay = Duration::from_millis(shared.timing().history_delay_ms);
        {
            let mut state = lock(&shared.state);
            if let Some(memory) = &shared.memory {
                state.device.prompt_done(memory);
            }
            state.queue.task_done();
            state.history.insert(
                prompt_id.clone(),
                entry,
                job,
                tokio::time::Instant::now() + delay,
            );
            shared.queue_updated(&state);
        }
        if run.client.is_some() {
            run.send(&json!({"type": "executing", "data": {"node": null, "prompt_id": prompt_id}}));
        }
        shared.hub.set_executing(None);
    }

    /// Runs one uncached node.
    async fn execute(
        &mut self,
        run: &mut Run<'_>,
        node: &str,
        sigs: &HashMap<String, u64>,
    ) -> Result<(), Stop> {
        let shared = run.shared;
        let class_type = run.class_of(node);
        run.progress.start(node);
        run.progress_state();
        if run.client.is_some() {
            let display = display_node(shared.protocol, node);
            run.send(&json!({"type": "executing", "data": {"node": node, "display_node": display, "prompt_id": run.item.prompt_id}}));
        }
        shared.hub.set_last_node(Some(node.to_owned()));
        run.record(TimelineEvent::NodeStarted {
            node: node.to_owned(),
            class_type: class_type.clone(),
        });

        let inputs = self.resolve(run, node, &class_type, sigs);
        let shown = current_inputs(run, node, &class_type, &inputs);
        if shared.interrupt.load(Ordering::SeqCst) {
            return Err(Stop::Interrupted {
                node: node.to_owned(),
            });
        }
        let fault = lock(&shared.faults).take_node_fault(node);
        if let Some(fault) = fault {
            return Err(Stop::Error {
                node: node.to_owned(),
                failure: injected_failure(fault),
                inputs: shown,
            });
        }

        let loads = self.model_loads(run, node, &class_type);
        if let Some(memory) = &shared.memory
            && (!loads.is_empty() || sampler_steps(run, node, &class_type).is_some())
        {
            let admitted = lock(&shared.state).device.admit(memory, &loads);
            if let Err(shortfall) = admitted {
                return Err(Stop::Error {
                    node: node.to_owned(),
                    failure: out_of_memory(&shortfall),
                    inputs: shown,
                });
            }
        }
        let timing = shared.timing();
        for name in loads {
            run.record(TimelineEvent::ModelLoad { name });
            tokio::time::sleep(Duration::from_millis(timing.model_load_ms)).await;
        }
        let time = timing.node_time(&class_type);
        match sampler_steps(run, node, &class_type) {
            Some(steps) => {
                let per_step = time / u32::try_from(steps).unwrap_or(u32::MAX);
                for step in 1..=steps {
                    tokio::time::sleep(per_step).await;
                    if shared.interrupt.load(Ordering::SeqCst) {
                        return Err(Stop::Interrupted {
                            node: node.to_owned(),
                        });
                    }
                    run.step(node, step, steps, None);
                }
            }
            None => tokio::time::sleep(time).await,
        }

        let preview_prefix = self.preview_prefix(node, &class_type);
        let produced = evaluate(&Node {
            id: node,
            class_type: &class_type,
            inputs: &inputs,
            prompt: &run.item.prompt,
            extra_data: &run.item.extra_data,
            dirs: &shared.dirs,
            catalogue: &shared.catalogue,
            preview_prefix: &preview_prefix,
            protocol: shared.protocol,
        });
        let Produced {
            outputs,
            ui,
            events,
        } = produced.map_err(|failure| Stop::Error {
            node: node.to_owned(),
            failure,
            inputs: shown,
        })?;
        for event in events {
            match event {
                Event::Preview { png, step, total } => run.step(node, step, total, Some(&png)),
                Event::Text(text) => {
                    let mut payload = u32::try_from(node.len())
                        .unwrap_or(u32::MAX)
                        .to_be_bytes()
                        .to_vec();
                    payload.extend_from_slice(node.as_bytes());
                    payload.extend_from_slice(text.as_bytes());
                    shared.hub.send_binary(run.sid(), TEXT, &payload);
                }
            }
        }
        if let Some(sig) = sigs.get(node) {
            self.cache.insert(
                *sig,
                Cached {
                    outputs: Arc::new(outputs),
                    ui: ui.clone(),
                },
            );
        }
        if ui.is_some() {
            run.executed(node, ui.as_ref());
        }
        run.progress.finish(node);
        run.progress_state();
        run.record(TimelineEvent::NodeFinished {
            node: node.to_owned(),
        });
        run.executed.push(node.to_owned());
        let first = run.ran.is_empty();
        run.ran.insert(node.to_owned());
        if first && lock(&shared.faults).take_interrupt() {
            shared.interrupt.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Linked inputs from the cache, literals as they are, in the class's input order.
    fn resolve(
        &self,
        run: &Run<'_>,
        node: &str,
        class_type: &str,
        sigs: &HashMap<String, u64>,
    ) -> Vec<(String, Val)> {
        let raw = run.node_inputs(node);
        let mut names: Vec<String> = run
            .shared
            .catalogue
            .inputs(class_type)
            .into_iter()
            .map(|d| d.name)
            .filter(|n| raw.contains_key(n))
            .collect();
        if names.is_empty() {
            names = raw.keys().cloned().collect();
        }
        names
            .into_iter()
            .map(|name| {
                let value = &raw[&name];
                let val = match link(value) {
                    Some((from, slot)) => sigs
                        .get(from)
                        .and_then(|s| self.cache.get(*s))
                        .and_then(|c| {
                            c.outputs
                                .get(usize::try_from(slot).unwrap_or(usize::MAX))
                                .cloned()
                        })
                        .unwrap_or(Val::Json(Value::Null)),
                    None => Val::from_literal(value),
                };
                (name, val)
            })
            .collect()
    }

    /// The models this node makes ComfyUI load: its own when it is a loader, or a cached
    /// loader's it consumes after `/free` unloaded them. Without a memory model one model per
    /// folder is loaded at a time; with one, whatever the device holds stays until unloaded.
    fn model_loads(&mut self, run: &Run<'_>, node: &str, class_type: &str) -> Vec<String> {
        let mut wanted = Vec::new();
        let mut add = |loader: &str, class: &str| {
            let inputs = run.node_inputs(loader);
            for (c, input, folder) in MODEL_INPUTS {
                if *c == class
                    && let Some(name) = inputs.get(*input).and_then(Value::as_str)
                {
                    wanted.push(((*folder).to_owned(), name.to_owned()));
                }
            }
        };
        add(node, class_type);
        for value in run.node_inputs(node).values() {
            if let Some((from, _)) = link(value)
                && !run.ran.contains(from)
            {
                add(from, &run.class_of(from));
            }
        }
        let mut loads: Vec<String> = Vec::new();
        if run.shared.memory.is_some() {
            // What is resident is the memory model's to say (models stay side by side).
            let state = lock(&run.shared.state);
            for (_, name) in wanted {
                if !state.device.is_resident(&name) && !loads.contains(&name) {
                    loads.push(name);
                }
            }
            return loads;
        }
        for (folder, name) in wanted {
            if self.resident.get(&folder) != Some(&name) {
                self.resident.insert(folder, name.clone());
                loads.push(name);
            }
        }
        loads
    }

    fn preview_prefix(&mut self, node: &str, class_type: &str) -> String {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstupvxyz";
        let (_, prefix) = self.previews.entry(node.to_owned()).or_insert_with(|| {
            let suffix: String = (0..5)
                .map(|_| char::from(LETTERS[fastrand::usize(..LETTERS.len())]))
                .collect();
            (class_type.to_owned(), format!("ComfyUI_temp_{suffix}"))
        });
        prefix.clone()
    }
}

/// Steps of a sampler-like node (an INT `steps` input and a LATENT output).
fn sampler_steps(run: &Run<'_>, node: &str, class_type: &str) -> Option<u64> {
    let catalogue = &run.shared.catalogue;
    let has_steps = catalogue
        .input(class_type, "steps")
        .is_some_and(|d| d.kind_str() == Some("INT"));
    let latent_out = catalogue
        .outputs(class_type)
        .iter()
        .any(|o| o.as_str() == Some("LATENT"));
    if !(has_steps && latent_out) {
        return None;
    }
    run.node_inputs(node)
        .get("steps")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
}

/// `current_inputs`: every given input and hidden input, each as a one-element list.
fn current_inputs(
    run: &Run<'_>,
    node: &str,
    class_type: &str,
    inputs: &[(String, Val)],
) -> Map<String, Value> {
    let mut shown: Map<String, Value> = inputs
        .iter()
        .map(|(name, val)| (name.clone(), json!([val.formatted()])))
        .collect();
    for (name, kind) in run.shared.catalogue.hidden(class_type) {
        let value = match kind.as_str() {
            "PROMPT" => Value::String(crate::pyjson::repr(&Value::Object(run.item.prompt.clone()))),
            "EXTRA_PNGINFO" => match run.item.extra_data.get("extra_pnginfo") {
                None | Some(Value::Null) => Value::Null,
                Some(v) => Value::String(crate::pyjson::repr(v)),
            },
            "UNIQUE_ID" => Value::String(node.to_owned()),
            _ => Value::Null,
        };
        shown.insert(name, json!([value]));
    }
    shown
}

fn injected_failure(fault: NodeFault) -> Failure {
    let mut traceback = execute_traceback();
    match fault {
        NodeFault::Error(message) => {
            traceback.push(
                "  File \"<comfy-sim>\", line 1, in injected_fault\n    raise Exception(message)\n"
                    .to_owned(),
            );
            Failure {
                exception_type: "Exception".to_owned(),
                message: format!("{message}\n"),
                traceback,
            }
        }
        NodeFault::OutOfMemory => {
            traceback.push(CAST_TO_FRAME.to_owned());
            Failure {
                exception_type: OOM_EXCEPTION.to_owned(),
                message: format!("Allocation on device \n{OOM_TIPS}"),
                traceback,
            }
        }
    }
}

/// `full_type_name` of torch's out-of-memory exception.
const OOM_EXCEPTION: &str = "torch.OutOfMemoryError";

const CAST_TO_FRAME: &str = "  File \"/opt/ComfyUI/comfy/model_management.py\", line 1184, in cast_to\n    r = torch.empty_like(weight, dtype=dtype, device=device)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";

/// The memory model's OOM, as ComfyUI reports it: torch's message, a newline, the tips.
fn out_of_memory(shortfall: &Shortfall) -> Failure {
    let mut traceback = execute_traceback();
    traceback.push(CAST_TO_FRAME.to_owned());
    Failure {
        exception_type: OOM_EXCEPTION.to_owned(),
        message: format!("{}\n{OOM_TIPS}", torch_message(shortfall)),
        traceback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgraph_nodes_show_on_the_outermost_instance_in_2026_only() {
        assert_eq!(display_node(Protocol::Y2026, "12:5"), "12");
        assert_eq!(display_node(Protocol::Y2026, "12:7:5"), "12");
        assert_eq!(display_node(Protocol::Y2026, "9"), "9");
        assert_eq!(display_node(Protocol::Recorded, "12:5"), "12:5");
        assert_eq!(
            meta(Protocol::Y2026, "12:7:5"),
            json!({"node_id": "12:7:5", "display_node": "12", "parent_node": "12:7", "real_node_id": "12:7:5"})
        );
        assert_eq!(meta(Protocol::Recorded, "3")["parent_node"], Value::Null);
    }
}
