//! Every injectable fault, each consumed once by the event it waits for.

use std::time::{Duration, Instant};

use comfy_sim::{Fault, TimelineEvent};
use serde_json::json;

use crate::support::{recorded, small_graph, start, start_with};

#[tokio::test]
async fn a_rejection_looks_like_a_failed_validation_once() {
    let sim = start().await;
    sim.sim.inject(Fault::RejectNextPrompt);
    // A prompt ComfyUI itself rejects does not use the fault up.
    assert_eq!(
        sim.post("/prompt", &json!({"prompt": {}})).await.status,
        400
    );
    let a = sim
        .post(
            "/prompt",
            &json!({"prompt": small_graph(1, "r"), "client_id": "r"}),
        )
        .await;
    assert_eq!(a.status, 400);
    let body = a.json();
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(body["node_errors"]["3"]["dependent_outputs"], json!(["3"]));
    assert_eq!(body["node_errors"]["3"]["class_type"], "SaveImage");
    let recorded_error =
        recorded("errors/int_above_max.json")["response"]["body_json"]["node_errors"]["1"].clone();
    assert_eq!(
        body["node_errors"]["3"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        recorded_error
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
    );
    assert_eq!(
        sim.post("/prompt", &json!({"prompt": small_graph(1, "r")}))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn execution_errors_hit_the_named_node_or_the_first_one() {
    let sim = start().await;
    let mut ws = sim.ws(Some("e")).await;
    // A fault for a node the next prompt lacks waits for one that has it.
    sim.sim.inject(Fault::ExecutionError {
        node: Some("3".into()),
        message: "boom".into(),
    });
    let cached_only = sim
        .queue(
            &json!({"9": {"class_type": "PreviewAny", "inputs": {"source": "x"}}}),
            "e",
        )
        .await;
    ws.until_done(&cached_only).await;
    let id = sim.queue(&small_graph(2, "e"), "e").await;
    let frames = ws.until_done(&id).await;
    let kinds: Vec<String> = crate::support::kinds(&frames);
    let error_at = kinds
        .iter()
        .position(|k| k == "execution_error")
        .unwrap_or_else(|| panic!("{kinds:?}"));
    assert_eq!(
        kinds[error_at..],
        ["execution_error", "status", "executing"]
    );
    let error = frames[frames.len() - 3].json()["data"].clone();
    assert_eq!(error["node_id"], "3");
    assert_eq!(error["executed"], json!(["1", "2"]));
    assert_eq!(error["exception_type"], "Exception");
    assert_eq!(error["exception_message"], "boom\n");
    assert_eq!(error["current_inputs"]["filename_prefix"], json!(["e"]));
    let entry = sim.history_entry(&id).await;
    assert_eq!(entry["status"]["messages"][2][0], "execution_error");
    assert_eq!(entry["status"]["completed"], false);

    sim.sim.inject(Fault::ExecutionError {
        node: None,
        message: "first".into(),
    });
    let id = sim.queue(&small_graph(3, "e"), "e").await;
    let entry = sim.history_entry(&id).await;
    assert_eq!(entry["status"]["messages"][2][1]["node_id"], "1");
    assert_eq!(entry["status"]["messages"][2][1]["executed"], json!([]));
}

#[tokio::test]
async fn out_of_memory_reads_like_torch() {
    let sim = start().await;
    sim.sim.inject(Fault::OutOfMemory);
    let id = sim.queue(&small_graph(4, "oom"), "oom").await;
    let entry = sim.history_entry(&id).await;
    let error = &entry["status"]["messages"][2][1];
    assert_eq!(error["exception_type"], "torch.OutOfMemoryError");
    let message = error["exception_message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Allocation on device"), "{message}");
    assert!(
        message.contains("This error means you ran out of memory on your GPU."),
        "{message}"
    );
    let id = sim.queue(&small_graph(5, "oom"), "oom").await;
    assert_eq!(
        sim.history_entry(&id).await["status"]["status_str"],
        "success"
    );
    assert_eq!(sim.sim.out_of_memory_count(), 1);
}

#[tokio::test]
async fn interrupt_next_stops_after_the_first_executed_node() {
    let sim = start().await;
    sim.sim.inject(Fault::InterruptNext);
    let mut ws = sim.ws(Some("in")).await;
    let id = sim.queue(&small_graph(6, "in"), "in").await;
    let frames = ws.until_done(&id).await;
    let data = frames
        .iter()
        .find(|f| f.kind() == "execution_interrupted")
        .map(|f| f.json()["data"].clone())
        .unwrap_or_else(|| panic!("not interrupted"));
    assert_eq!(data["node_id"], "2");
    assert_eq!(data["executed"], json!(["1"]));
    let last = sim.sim.timeline().last().map(|e| e.event.clone());
    assert_eq!(
        last,
        Some(TimelineEvent::Finished {
            outcome: "interrupted".into()
        })
    );
}

#[tokio::test]
async fn dropped_websockets_close_after_n_frames_and_can_reconnect() {
    let sim = start().await;
    let mut ws = sim.ws(Some("d")).await;
    ws.next_frame().await;
    sim.sim.inject(Fault::DropWebsockets { after_frames: 3 });
    let id = sim.queue(&small_graph(7, "d"), "d").await;
    let mut got = 0;
    while ws.next().await.is_some() {
        got += 1;
    }
    assert_eq!(got, 3);
    let mut again = sim.ws(Some("d")).await;
    assert_eq!(again.next_frame().await.kind(), "status");
    assert_eq!(
        sim.history_entry(&id).await["status"]["status_str"],
        "success"
    );
}

#[tokio::test]
async fn slow_history_delays_one_answer() {
    let sim = start().await;
    sim.sim
        .inject(Fault::SlowHistory(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(sim.get_json("/history/nope").await, json!({}));
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    sim.get_json("/history").await;
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn a_stall_holds_every_request_once() {
    let sim = start().await;
    sim.sim.inject(Fault::Stall(Duration::from_millis(300)));
    let t = Instant::now();
    let (a, b) = tokio::join!(sim.get("/prompt"), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        sim.get("/queue").await
    });
    assert_eq!((a.status, b.status), (200, 200));
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    sim.get("/prompt").await;
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn history_can_arrive_late() {
    let sim = start_with(|c| c.timing.history_delay_ms = 300).await;
    let mut ws = sim.ws(Some("late")).await;
    let id = sim.queue(&small_graph(8, "late"), "late").await;
    ws.until_done(&id).await;
    assert_eq!(sim.get_json(&format!("/history/{id}")).await, json!({}));
    assert_eq!(
        sim.history_entry(&id).await["status"]["status_str"],
        "success"
    );
}
