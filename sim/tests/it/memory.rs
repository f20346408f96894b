//! The GPU memory model (`Config::memory`): a model switch that does not fit fails with the
//! out-of-memory error ComfyUI reports, `/free` makes room, a leak only a restart clears, and
//! `/system_stats` shows it all; without a memory model nothing of this happens.

use std::collections::BTreeSet;
use std::time::Duration;

use comfy_sim::Memory;
use serde_json::{Value, json};

use crate::support::{TestSim, recorded, recorded_frames, sd15, small_graph, start_with};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// 10 GiB; `a` and `b` take 6 GiB each (they never fit together), `small` 1 GiB (the default),
/// and a running prompt holds 1 GiB.
fn ten_gib() -> Memory {
    Memory {
        vram_bytes: 10 * GIB,
        model_bytes: [
            ("a.safetensors".to_owned(), 6 * GIB),
            ("b.safetensors".to_owned(), 6 * GIB),
        ]
        .into(),
        default_model_bytes: GIB,
        leak_bytes_per_prompt: 0,
        working_bytes: GIB,
    }
}

async fn start_gpu(memory: Memory) -> TestSim {
    start_with(|c| {
        c.models.insert(
            "checkpoints".into(),
            vec![
                "a.safetensors".into(),
                "b.safetensors".into(),
                "small.safetensors".into(),
            ],
        );
        c.memory = Some(memory);
        c.timing.class_ms.insert("KSampler".into(), 10);
    })
    .await
}

async fn run(sim: &TestSim, prompt: &Value) -> Value {
    let id = sim.queue(prompt, "memory").await;
    sim.history_entry(&id).await
}

fn status(entry: &Value) -> &str {
    entry["status"]["status_str"].as_str().unwrap_or_default()
}

/// The one device `/system_stats` reports.
async fn device(sim: &TestSim) -> Value {
    let stats = sim.get_json("/system_stats").await;
    let devices = stats["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), 1, "{stats}");
    devices[0].clone()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_model_switch_that_does_not_fit_fails_as_comfyui_reports_an_oom() {
    let sim = start_gpu(ten_gib()).await;
    let mut ws = sim.ws(Some("oom")).await;
    assert_eq!(
        status(&run(&sim, &sd15("a.safetensors", 1, 2)).await),
        "success"
    );
    assert_eq!(sim.sim.resident_models(), ["a.safetensors"]);

    // b (6 GiB) and the prompt's working memory (1 GiB) do not fit beside a (6 of 10 GiB).
    let id = sim.queue(&sd15("b.safetensors", 2, 2), "oom").await;
    let frames = ws.until_done(&id).await;
    let error = frames
        .iter()
        .find(|f| f.kind() == "execution_error")
        .map(|f| f.json()["data"].clone())
        .unwrap_or_else(|| panic!("no execution_error frame"));
    let recorded_error = recorded_frames("ws_execution_error_loadimage_not_an_image.jsonl")
        .into_iter()
        .find(|f| f.kind() == "execution_error")
        .map(|f| f.json()["data"].clone())
        .unwrap_or_else(|| panic!("the recording has no execution_error"));
    assert_eq!(keys(&error), keys(&recorded_error));
    assert_eq!(error["node_id"], "4");
    assert_eq!(error["node_type"], "CheckpointLoaderSimple");
    assert_eq!(error["exception_type"], "torch.OutOfMemoryError");
    let message = error["exception_message"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        "Allocation on device 0 would exceed allowed memory. (out of memory)\n\
         Currently allocated     : 6.00 GiB\n\
         Requested               : 7.00 GiB\n\
         Device limit            : 10.00 GiB\n\
         Free (according to CUDA): 4.00 GiB\n\
         PyTorch limit (set by user-supplied memory fraction)\n                        : 17179869184.00 GiB\n\
         This error means you ran out of memory on your GPU.\n\n\
         TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
    );
    // What comfyd's `ExecutionError::is_out_of_memory` looks for.
    assert!(message.to_lowercase().contains("out of memory"));
    assert!(error["traceback"].as_array().is_some_and(|t| !t.is_empty()));

    let entry = sim.history_entry(&id).await;
    assert_eq!(status(&entry), "error");
    assert_eq!(entry["status"]["completed"], false);
    let messages = entry["status"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = messages.last().cloned().unwrap_or_default();
    assert_eq!(last[0], "execution_error");
    assert_eq!(last[1]["exception_message"], message);

    // ComfyUI unloads every model after an OOM ("Got an OOM, unloading all loaded models."),
    // so the same prompt fits when it is submitted again.
    assert_eq!(sim.sim.out_of_memory_count(), 1);
    assert!(sim.sim.resident_models().is_empty());
    assert_eq!(
        status(&run(&sim, &sd15("b.safetensors", 2, 2)).await),
        "success"
    );
    assert_eq!(sim.sim.resident_models(), ["b.safetensors"]);
    assert_eq!(sim.sim.out_of_memory_count(), 1);
}

#[tokio::test]
async fn free_with_unload_models_makes_room_for_the_next_model() {
    let sim = start_gpu(ten_gib()).await;
    assert_eq!(
        status(&run(&sim, &sd15("a.safetensors", 1, 2)).await),
        "success"
    );
    assert_eq!(
        sim.post("/free", &json!({"unload_models": true}))
            .await
            .status,
        200
    );
    assert_eq!(
        status(&run(&sim, &sd15("b.safetensors", 2, 2)).await),
        "success"
    );
    assert_eq!(sim.sim.resident_models(), ["b.safetensors"]);

    // Models that fit side by side stay side by side: nothing is evicted.
    assert_eq!(
        status(&run(&sim, &sd15("small.safetensors", 3, 2)).await),
        "success"
    );
    assert_eq!(
        sim.sim.resident_models(),
        ["b.safetensors", "small.safetensors"]
    );
    assert_eq!(sim.sim.vram_free(), Some(3 * GIB));

    // `free_memory` alone unloads too (ComfyUI's `unload_models` defaults to it).
    assert_eq!(
        sim.post("/free", &json!({"free_memory": true}))
            .await
            .status,
        200
    );
    assert_eq!(
        status(&run(&sim, &sd15("a.safetensors", 4, 2)).await),
        "success"
    );
    assert_eq!(sim.sim.resident_models(), ["a.safetensors"]);
    assert_eq!(sim.sim.out_of_memory_count(), 0);

    let calls: Vec<(bool, bool)> = sim
        .sim
        .free_calls()
        .iter()
        .map(|c| (c.unload_models, c.free_memory))
        .collect();
    assert_eq!(calls, [(true, false), (false, true)]);
    let at: Vec<Duration> = sim.sim.free_calls().iter().map(|c| c.at).collect();
    assert!(at[0] <= at[1], "{at:?}");
}

#[tokio::test]
async fn a_leak_shrinks_vram_free_per_prompt_and_only_a_restart_gives_it_back() {
    let sim = start_gpu(Memory {
        vram_bytes: 4 * GIB,
        model_bytes: Default::default(),
        default_model_bytes: GIB,
        leak_bytes_per_prompt: 512 * MIB,
        working_bytes: GIB,
    })
    .await;
    // A graph without models or samplers needs no VRAM, but leaks all the same.
    for n in 1..=2u64 {
        assert_eq!(
            status(&run(&sim, &small_graph(n as u32, "leak")).await),
            "success"
        );
        assert_eq!(
            device(&sim).await["vram_free"],
            json!(4 * GIB - n * 512 * MIB)
        );
    }
    assert_eq!(sim.sim.leaked_bytes(), GIB);
    // Neither flag of `/free` gives leaked memory back.
    sim.post(
        "/free",
        &json!({"unload_models": true, "free_memory": true}),
    )
    .await;
    assert_eq!(status(&run(&sim, &small_graph(3, "leak")).await), "success");
    assert_eq!(
        device(&sim).await["vram_free"],
        json!(4 * GIB - 3 * 512 * MIB)
    );

    // 1.5 GiB leaked: the model (1 GiB) and working memory (1 GiB) still fit, then working
    // memory alone, then no longer.
    assert_eq!(
        status(&run(&sim, &sd15("small.safetensors", 1, 2)).await),
        "success"
    );
    assert_eq!(device(&sim).await["vram_free"], json!(GIB));
    assert_eq!(
        status(&run(&sim, &sd15("small.safetensors", 2, 2)).await),
        "success"
    );
    assert_eq!(device(&sim).await["vram_free"], json!(512 * MIB));
    let oom = run(&sim, &sd15("small.safetensors", 3, 2)).await;
    assert_eq!(status(&oom), "error");
    let last = oom["status"]["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .unwrap_or_default();
    assert_eq!(last[1]["exception_type"], "torch.OutOfMemoryError");
    // The model was resident: only the sampler's working memory was asked for.
    assert_eq!(last[1]["node_id"], "3");
    let message = last[1]["exception_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Requested               : 1024.00 MiB\n"),
        "{message}"
    );
    sim.post(
        "/free",
        &json!({"unload_models": true, "free_memory": true}),
    )
    .await;
    let again = run(&sim, &sd15("small.safetensors", 4, 2)).await;
    assert_eq!(status(&again), "error", "freeing does not cure a leak");
    assert_eq!(sim.sim.out_of_memory_count(), 2);

    // A restart does.
    sim.sim.go_down().await;
    sim.sim.come_back().await;
    assert_eq!(sim.sim.leaked_bytes(), 0);
    assert_eq!(device(&sim).await["vram_free"], json!(4 * GIB));
    assert_eq!(
        status(&run(&sim, &sd15("small.safetensors", 5, 2)).await),
        "success"
    );
    assert_eq!(sim.sim.out_of_memory_count(), 2, "kept across the restart");
}

#[tokio::test]
async fn system_stats_reports_the_simulated_gpu_and_follows_it() {
    let sim = start_with(|c| {
        c.models
            .insert("checkpoints".into(), vec!["a.safetensors".into()]);
        c.memory = Some(ten_gib());
        c.timing.class_ms.insert("KSampler".into(), 1500);
    })
    .await;
    let recorded_stats = recorded("system_stats.json");
    let stats = sim.get_json("/system_stats").await;
    assert_eq!(keys(&stats["system"]), keys(&recorded_stats["system"]));
    assert_eq!(
        keys(&stats["devices"][0]),
        keys(&recorded_stats["devices"][0])
    );
    assert_eq!(
        stats["devices"],
        json!([{
            "name": "cuda:0 NVIDIA Simulated GPU : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": 10 * GIB,
            "vram_free": 10 * GIB,
            "torch_vram_total": 0,
            "torch_vram_free": 0
        }])
    );
    assert!(
        !stats["system"]["argv"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("--cpu"))),
        "a GPU server does not run with --cpu: {}",
        stats["system"]["argv"]
    );

    // While the sampler runs, the prompt's working memory is in use beside its model.
    let mut ws = sim.ws(Some("stats")).await;
    let id = sim.queue(&sd15("a.safetensors", 1, 3), "stats").await;
    ws.until(|f| f.kind() == "progress").await;
    let running = device(&sim).await;
    assert_eq!(running["vram_free"], json!(3 * GIB));
    assert_eq!(running["torch_vram_total"], json!(7 * GIB));
    assert_eq!(sim.sim.vram_free(), Some(3 * GIB));
    ws.until_done(&id).await;
    let idle = device(&sim).await;
    assert_eq!(idle["vram_free"], json!(4 * GIB));
    assert_eq!(idle["torch_vram_total"], json!(6 * GIB));

    // `/free` acts when the worker is idle; the figures show it within moments.
    sim.post("/free", &json!({"unload_models": true})).await;
    let mut free = Value::Null;
    for _ in 0..200 {
        free = device(&sim).await["vram_free"].clone();
        if free == json!(10 * GIB) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(free, json!(10 * GIB));
}

#[tokio::test]
async fn without_a_memory_model_nothing_runs_out_of_memory() {
    let sim = start_with(|c| {
        c.models.insert(
            "checkpoints".into(),
            vec!["a.safetensors".into(), "b.safetensors".into()],
        );
    })
    .await;
    for (n, model) in ["a.safetensors", "b.safetensors", "a.safetensors"]
        .iter()
        .enumerate()
    {
        let entry = run(&sim, &sd15(model, n as u64, 2)).await;
        assert_eq!(status(&entry), "success");
    }
    assert_eq!(
        sim.get_json("/system_stats").await,
        recorded("system_stats.json")
    );
    assert_eq!(sim.sim.out_of_memory_count(), 0);
    assert!(sim.sim.resident_models().is_empty());
    assert_eq!(sim.sim.leaked_bytes(), 0);
    assert_eq!(sim.sim.vram_free(), None);
}
