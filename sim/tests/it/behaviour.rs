//! The simulator's own behaviour beyond the recordings: partial caching, model loads, the
//! serial queue, interrupts, `/free`, restarts, and the images it writes.

use std::time::Duration;

use comfy_sim::{TimelineEntry, TimelineEvent};
use serde_json::{Value, json};

use crate::support::{
    TestSim, decode_png, png_bytes, sd15, slow_graph, small_graph, start, start_with,
};

fn events_of(timeline: &[TimelineEntry], prompt_id: &str) -> Vec<TimelineEvent> {
    timeline
        .iter()
        .filter(|e| e.prompt_id == prompt_id)
        .map(|e| e.event.clone())
        .collect()
}

fn started_nodes(timeline: &[TimelineEntry], prompt_id: &str) -> Vec<String> {
    events_of(timeline, prompt_id)
        .into_iter()
        .filter_map(|e| match e {
            TimelineEvent::NodeStarted { node, .. } => Some(node),
            _ => None,
        })
        .collect()
}

fn model_loads(timeline: &[TimelineEntry], prompt_id: &str) -> Vec<String> {
    events_of(timeline, prompt_id)
        .into_iter()
        .filter_map(|e| match e {
            TimelineEvent::ModelLoad { name } => Some(name),
            _ => None,
        })
        .collect()
}

async fn run(sim: &TestSim, prompt: &Value) -> (String, Value) {
    let id = sim.queue(prompt, "behaviour").await;
    let entry = sim.history_entry(&id).await;
    (id, entry)
}

#[tokio::test]
async fn only_what_changed_runs_again() {
    let sim = start().await;
    let (first, _) = run(&sim, &small_graph(0x123456, "a")).await;
    let (second, entry) = run(&sim, &small_graph(0x123456, "b")).await;
    let timeline = sim.sim.timeline();
    assert_eq!(started_nodes(&timeline, &first), ["1", "2", "3"]);
    assert_eq!(started_nodes(&timeline, &second), ["3"]);
    assert!(
        events_of(&timeline, &second).contains(&TimelineEvent::Cached {
            nodes: vec!["1".into(), "2".into()]
        })
    );
    assert_eq!(
        entry["outputs"]["3"]["images"][0]["filename"],
        "b_00001_.png"
    );
    assert_eq!(
        events_of(&timeline, &first),
        [
            TimelineEvent::Queued,
            TimelineEvent::Started,
            TimelineEvent::Cached { nodes: vec![] },
            TimelineEvent::NodeStarted {
                node: "1".into(),
                class_type: "EmptyImage".into()
            },
            TimelineEvent::NodeFinished { node: "1".into() },
            TimelineEvent::NodeStarted {
                node: "2".into(),
                class_type: "ImageInvert".into()
            },
            TimelineEvent::NodeFinished { node: "2".into() },
            TimelineEvent::NodeStarted {
                node: "3".into(),
                class_type: "SaveImage".into()
            },
            TimelineEvent::NodeFinished { node: "3".into() },
            TimelineEvent::Finished {
                outcome: "success".into()
            },
        ]
    );
}

#[tokio::test]
async fn the_sd15_graph_yields_a_png_and_model_loads_show_in_the_timeline() {
    let sim = start_with(|c| {
        c.models
            .insert("checkpoints".into(), vec!["tiny.safetensors".into()]);
        c.timing.model_load_ms = 20;
    })
    .await;
    let mut ws = sim.ws(Some("sd")).await;
    let id = sim.queue(&sd15("tiny.safetensors", 1, 4), "sd").await;
    let frames = ws.until_done(&id).await;
    let steps: Vec<Value> = frames
        .iter()
        .filter(|f| f.kind() == "progress")
        .map(|f| {
            json!([
                f.json()["data"]["node"],
                f.json()["data"]["value"],
                f.json()["data"]["max"]
            ])
        })
        .collect();
    assert_eq!(
        steps,
        [
            json!(["3", 1, 4]),
            json!(["3", 2, 4]),
            json!(["3", 3, 4]),
            json!(["3", 4, 4])
        ]
    );
    let order: Vec<Value> = frames
        .iter()
        .filter(|f| f.kind() == "executing")
        .map(|f| f.json()["data"]["node"].clone())
        .collect();
    // ComfyUI's pick: the loader first (it feeds VAEDecode → SaveImage), then staging order.
    assert_eq!(
        order,
        json!(["4", "5", "7", "6", "3", "8", "9", null])
            .as_array()
            .cloned()
            .unwrap_or_default()
    );
    let entry = sim.history_entry(&id).await;
    let file = entry["outputs"]["9"]["images"][0]["filename"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let png = std::fs::read(sim.root().join("output").join(&file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let (w, h, ..) = decode_png(&png);
    assert_eq!((w, h), (64, 64));

    // Same model, new seed: the loader is cached and the model resident.
    let (again, _) = run(&sim, &sd15("tiny.safetensors", 2, 4)).await;
    // After `/free` unloaded it, the sampler has to load it again.
    sim.post("/free", &json!({"unload_models": true})).await;
    let (reloaded, _) = run(&sim, &sd15("tiny.safetensors", 3, 4)).await;
    let timeline = sim.sim.timeline();
    assert_eq!(model_loads(&timeline, &id), ["tiny.safetensors"]);
    assert_eq!(model_loads(&timeline, &again), Vec::<String>::new());
    assert_eq!(started_nodes(&timeline, &again), ["3", "8", "9"]);
    assert_eq!(model_loads(&timeline, &reloaded), ["tiny.safetensors"]);

    // A checkpoint the server does not have is refused like ComfyUI does.
    let a = sim
        .post(
            "/prompt",
            &json!({"prompt": sd15("other.safetensors", 1, 4)}),
        )
        .await;
    assert_eq!(a.status, 400);
    let error = &a.json()["node_errors"]["4"]["errors"][0];
    assert_eq!(error["type"], "value_not_in_list");
    assert_eq!(
        error["details"],
        "ckpt_name: 'other.safetensors' not in ['tiny.safetensors']"
    );
}

#[tokio::test]
async fn prompts_run_one_at_a_time_in_queue_order() {
    let sim = start_with(|c| c.timing.node_ms = 15).await;
    let a = sim.queue(&small_graph(1, "a"), "q").await;
    let b = sim.queue(&small_graph(2, "b"), "q").await;
    let c = sim.queue(&small_graph(3, "c"), "q").await;
    let front = sim
        .post(
            "/prompt",
            &json!({"prompt": small_graph(4, "d"), "front": true}),
        )
        .await;
    let d = front.json()["prompt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    sim.history_entry(&c).await;
    let timeline = sim.sim.timeline();
    let runs: Vec<&str> = timeline
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                TimelineEvent::Started | TimelineEvent::Finished { .. }
            )
        })
        .map(|e| e.prompt_id.as_str())
        .collect();
    // Each Started is followed by its own Finished: never two at once.
    for pair in runs.chunks(2) {
        assert_eq!(pair[0], pair[1], "{runs:?}");
    }
    let order: Vec<&str> = runs.iter().step_by(2).copied().collect();
    assert_eq!(order, [a.as_str(), d.as_str(), b.as_str(), c.as_str()]);
}

#[tokio::test]
async fn an_interrupt_stops_a_sampler_between_steps() {
    let sim = start_with(|c| {
        c.models
            .insert("checkpoints".into(), vec!["m.safetensors".into()]);
        c.timing.class_ms.insert("KSampler".into(), 2000);
    })
    .await;
    let mut ws = sim.ws(Some("i")).await;
    let id = sim.queue(&sd15("m.safetensors", 5, 20), "i").await;
    ws.until(|f| f.kind() == "progress" && f.json()["data"]["value"] == 2)
        .await;
    sim.request("POST", "/interrupt", None).await;
    let frames = ws.until_done(&id).await;
    let interrupted = frames
        .iter()
        .find(|f| f.kind() == "execution_interrupted")
        .map(|f| f.json()["data"].clone());
    let interrupted = interrupted.unwrap_or_else(|| panic!("not interrupted"));
    assert_eq!(interrupted["node_id"], "3");
    assert_eq!(interrupted["node_type"], "KSampler");
    assert!(frames.iter().filter(|f| f.kind() == "progress").count() < 18);
    let entry = sim.history_entry(&id).await;
    assert_eq!(entry["status"]["status_str"], "error");
    let last = sim.sim.timeline().last().map(|e| e.event.clone());
    assert_eq!(
        last,
        Some(TimelineEvent::Finished {
            outcome: "interrupted".into()
        })
    );
}

#[tokio::test]
async fn an_interrupt_naming_another_prompt_changes_nothing() {
    let sim = start_with(|c| c.timing.node_ms = 40).await;
    let mut ws = sim.ws(Some("o")).await;
    let id = sim.queue(&small_graph(9, "o"), "o").await;
    ws.until(|f| f.kind() == "executing").await;
    sim.post("/interrupt", &json!({"prompt_id": "not-running"}))
        .await;
    let frames = ws.until_done(&id).await;
    assert!(frames.iter().any(|f| f.kind() == "execution_success"));
    // An interrupt while idle is forgotten when the next prompt starts, as in ComfyUI.
    sim.request("POST", "/interrupt", None).await;
    let (_, entry) = run(&sim, &small_graph(10, "o")).await;
    assert_eq!(entry["status"]["status_str"], "success");
}

#[tokio::test]
async fn free_memory_empties_the_cache_but_unload_models_keeps_it() {
    let sim = start().await;
    let graph = small_graph(0x0000FF, "f");
    run(&sim, &graph).await;
    sim.post("/free", &json!({"unload_models": true})).await;
    let (kept, _) = run(&sim, &graph).await;
    sim.post("/free", &json!({"free_memory": true})).await;
    let (emptied, _) = run(&sim, &graph).await;
    let timeline = sim.sim.timeline();
    assert!(started_nodes(&timeline, &kept).is_empty());
    assert_eq!(started_nodes(&timeline, &emptied), ["1", "2", "3"]);
    assert_eq!(sim.post("/free", &json!([1])).await.status, 500);
}

#[tokio::test]
async fn going_down_refuses_connections_and_coming_back_forgets() {
    let sim = start_with(|c| {
        c.timing.class_ms.insert("ImageBlur".into(), 100);
    })
    .await;
    run(&sim, &small_graph(5, "before")).await;
    let mut ws = sim.ws(Some("down")).await;
    ws.next_frame().await;
    let lost = sim.queue(&slow_graph(6, 5), "down").await;
    ws.until(|f| f.kind() == "executing" && f.json()["data"]["node"] == "10")
        .await;

    sim.sim.go_down().await;
    assert!(ws.next().await.is_none(), "the websocket is closed");
    let refused = sim.http.get(sim.url("/queue")).send().await;
    assert!(
        refused.as_ref().is_err_and(reqwest::Error::is_connect),
        "{refused:?}"
    );
    assert!(
        tokio_tungstenite::connect_async(sim.url("/ws").replace("http", "ws"))
            .await
            .is_err()
    );

    sim.sim.come_back().await;
    assert_eq!(
        sim.get_json("/queue").await,
        json!({"queue_running": [], "queue_pending": []})
    );
    assert_eq!(sim.get_json("/history").await, json!({}));
    assert_eq!(sim.get_json(&format!("/history/{lost}")).await, json!({}));
    let a = sim
        .post("/prompt", &json!({"prompt": small_graph(5, "after")}))
        .await;
    assert_eq!(
        a.json()["number"],
        0,
        "the counter restarts with the server"
    );
    let id = a.json()["prompt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let entry = sim.history_entry(&id).await;
    assert_eq!(entry["status"]["status_str"], "success");
    let timeline = sim.sim.timeline();
    assert_eq!(
        started_nodes(&timeline, &id),
        ["1", "2", "3"],
        "the cache did not survive the restart"
    );
}

#[tokio::test]
async fn outputs_are_real_pngs_of_the_right_size() {
    let sim = start().await;
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 0x00FF00}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "width": 32, "height": 0, "crop": "disabled"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sub/dir/pic"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    });
    let (_, entry) = run(&sim, &graph).await;
    let saved = entry["outputs"]["3"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(saved.len(), 2);
    assert_eq!(
        saved[0],
        json!({"filename": "pic_00001_.png", "subfolder": "sub/dir", "type": "output"})
    );
    assert_eq!(saved[1]["filename"], "pic_00002_.png");
    for s in &saved {
        let path = sim
            .root()
            .join("output/sub/dir")
            .join(s["filename"].as_str().unwrap_or_default());
        let (w, h, pixels, ..) =
            decode_png(&std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!((w, h), (32, 24));
        assert_eq!(pixels[..3], [0, 255, 0]);
    }
    let preview = &entry["outputs"]["4"]["images"][0];
    assert_eq!(preview["type"], "temp");
    assert!(
        preview["filename"]
            .as_str()
            .is_some_and(|f| f.starts_with("ComfyUI_temp_") && f.ends_with("_00001_.png"))
    );
    let view = sim
        .get(&format!(
            "/view?filename={}&type=temp&subfolder=",
            preview["filename"].as_str().unwrap_or_default()
        ))
        .await;
    assert_eq!(decode_png(&view.bytes).0, 64);

    // The counter continues per prefix.
    let mut other = graph.clone();
    other["1"]["inputs"]["color"] = json!(1);
    let (_, entry) = run(&sim, &other).await;
    assert_eq!(
        entry["outputs"]["3"]["images"][0]["filename"],
        "pic_00003_.png"
    );

    // An uploaded image goes through LoadImage and back out inverted.
    sim.upload("in.png", png_bytes(5, 7, [200, 100, 0]), &[])
        .await;
    let load = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}}
    });
    let (_, entry) = run(&sim, &load).await;
    let file = sim.root().join("output").join(
        entry["outputs"]["3"]["images"][0]["filename"]
            .as_str()
            .unwrap_or_default(),
    );
    let (w, h, pixels, ..) = decode_png(&std::fs::read(file).unwrap_or_default());
    assert_eq!((w, h), (5, 7));
    // float32 `1 - 200/255` times 255 is 54.99998, truncated like ComfyUI's `astype(uint8)`.
    assert_eq!(pixels[..3], [54, 155, 255]);
}

#[tokio::test]
async fn validation_converts_values_and_runs_only_valid_outputs() {
    let sim = start().await;
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": "16", "height": 8.9, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ok"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "bad"}}
    });
    let a = sim
        .post("/prompt", &json!({"prompt": graph, "client_id": "v"}))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json()["node_errors"]["3"]["errors"][0]["type"],
        "exception_during_validation"
    );
    let id = a.json()["prompt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let entry = sim.history_entry(&id).await;
    assert_eq!(entry["prompt"][4], json!(["2"]));
    assert_eq!(entry["prompt"][2]["1"]["inputs"]["width"], json!(16));
    assert_eq!(entry["prompt"][2]["1"]["inputs"]["height"], json!(8));
    assert_eq!(
        entry["outputs"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["2".to_owned()])
    );
}

/// As in ComfyUI, a prompt without a client id has no `executing` frames, but its
/// `progress_state` frames go to every socket.
#[tokio::test]
async fn a_prompt_without_client_id_reaches_sockets_only_through_progress() {
    let sim = start().await;
    let mut ws = sim.ws(Some("watcher")).await;
    ws.next_frame().await;
    let a = sim
        .post("/prompt", &json!({"prompt": small_graph(42, "anon")}))
        .await;
    let id = a.json()["prompt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    sim.history_entry(&id).await;
    let mut kinds = Vec::new();
    while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(150), ws.next()).await {
        kinds.push(f.kind());
    }
    assert!(kinds.contains(&"progress_state".to_owned()), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k.starts_with("execut")), "{kinds:?}");
}
