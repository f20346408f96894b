//! The 2026 protocol mode (`Protocol::Y2026`), against what `shared/comfyui/NEWER.md` states:
//! UUID-only client prompt ids, the jobs API and its cancel, video and `input` entries,
//! subgraph display nodes, a null history status; and that the recorded mode has none of it.

use std::time::Duration;

use comfy_sim::{Fault, Protocol, Timing};
use serde_json::{Value, json};

use crate::support::{TestSim, png_bytes, slow_graph, small_graph, start, start_with};

async fn start_2026() -> TestSim {
    start_with(|c| c.protocol = Protocol::Y2026).await
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Posts a prompt with a chosen id; the answer.
async fn submit(t: &TestSim, prompt: &Value, prompt_id: &Value) -> crate::support::Answer {
    t.post(
        "/prompt",
        &json!({"prompt": prompt, "client_id": "newer", "prompt_id": prompt_id}),
    )
    .await
}

/// Polls `/api/jobs/{id}` until its status is `want`.
async fn job_until(t: &TestSim, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = t.get_json(&format!("/api/jobs/{id}")).await;
        if last["status"] == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never became {want}: {last}");
}

#[tokio::test]
async fn client_prompt_ids_must_be_canonical_uuids() {
    let t = start_2026().await;
    for bad in [
        json!("my-job-1"),
        json!("0B7A2F44-9C1E-4F4E-8A53-2D7C1F0E9A11"),
        json!("0b7a2f449c1e4f4e8a532d7c1f0e9a11"),
        json!(42),
    ] {
        let a = submit(&t, &small_graph(1, "bad_id"), &bad).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
        assert_eq!(a.content_type, "application/json; charset=utf-8");
        let body = a.json();
        assert_eq!(body["error"]["type"], "invalid_prompt_id", "{body}");
        assert_eq!(body["node_errors"], json!({}));
        let keys: Vec<&String> = body["error"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["type", "message", "details", "extra_info"], "{body}");
    }
    let id = uuid();
    let a = submit(&t, &small_graph(2, "good_id"), &json!(id)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["prompt_id"], json!(id));
    // The server does not de-duplicate: the same id again is a second queue item.
    let again = submit(&t, &small_graph(3, "good_id"), &json!(id)).await;
    assert_eq!(again.status, 200, "{}", again.text());
    // Without an id the server picks a canonical one.
    let picked = t.queue(&small_graph(4, "no_id"), "newer").await;
    assert_eq!(
        uuid::Uuid::parse_str(&picked).map(|u| u.to_string()).ok(),
        Some(picked.clone())
    );

    // The recorded server takes any id.
    let old = start().await;
    let a = submit(&old, &small_graph(5, "old"), &json!("my-job-1")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["prompt_id"], "my-job-1");
}

#[tokio::test]
async fn the_jobs_api_exists_only_under_api_and_only_in_2026() {
    let old = start().await;
    assert_eq!(old.get("/api/jobs").await.status, 404);
    let id = uuid();
    assert_eq!(
        old.post(&format!("/api/jobs/{id}/cancel"), &json!({}))
            .await
            .status,
        404
    );
    let t = start_2026().await;
    assert_eq!(t.get("/jobs").await.status, 404);
    assert_eq!(
        t.post(&format!("/jobs/{id}/cancel"), &json!({}))
            .await
            .status,
        404
    );
    let list = t.get_json("/api/jobs").await;
    assert_eq!(list["jobs"], json!([]), "{list}");
    let unknown = t.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    // An unknown or finished id: 200, nothing done.
    let a = t.post(&format!("/api/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!((a.status, a.json()), (200, json!({"cancelled": false})));
}

#[tokio::test]
async fn jobs_report_status_times_outputs_and_workflow() {
    let t = start_2026().await;
    let ok = uuid();
    assert_eq!(
        submit(&t, &small_graph(7, "jobs_ok"), &json!(ok))
            .await
            .status,
        200
    );
    let done = job_until(&t, &ok, "completed").await;
    assert_eq!(done["id"], json!(ok));
    assert_eq!(done["outputs_count"], 1, "{done}");
    assert_eq!(done["execution_error"], Value::Null);
    let (created, start, end) = (
        done["create_time"].as_u64().unwrap_or(0),
        done["execution_start_time"].as_u64().unwrap_or(0),
        done["execution_end_time"].as_u64().unwrap_or(0),
    );
    assert!(created > 0 && created <= start && start <= end, "{done}");
    assert_eq!(
        done["outputs"]["3"]["images"][0]["type"], "output",
        "{done}"
    );
    assert_eq!(done["execution_status"]["status_str"], "success");
    assert_eq!(done["workflow"]["prompt"]["3"]["class_type"], "SaveImage");
    assert_eq!(done["workflow"]["extra_data"]["client_id"], "newer");

    t.sim.inject(Fault::ExecutionError {
        node: Some("2".into()),
        message: "boom".into(),
    });
    let bad = uuid();
    assert_eq!(
        submit(&t, &small_graph(8, "jobs_bad"), &json!(bad))
            .await
            .status,
        200
    );
    let failed = job_until(&t, &bad, "failed").await;
    assert_eq!(failed["execution_error"]["node_id"], "2", "{failed}");
    assert_eq!(failed["outputs_count"], 0);

    // A slow one running, another pending: the list shows all four, newest first, and filters.
    let running = uuid();
    let pending = uuid();
    t.sim.set_timing(Timing {
        node_ms: 200,
        ..Timing::default()
    });
    assert_eq!(
        submit(&t, &slow_graph(9, 3), &json!(running)).await.status,
        200
    );
    // Creation times are in ms: keep them apart so the order is certain.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        submit(&t, &slow_graph(10, 3), &json!(pending)).await.status,
        200
    );
    job_until(&t, &running, "in_progress").await;
    let all = t.get_json("/api/jobs").await;
    let ids: Vec<&str> = all["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            pending.as_str(),
            running.as_str(),
            bad.as_str(),
            ok.as_str()
        ],
        "{all}"
    );
    assert_eq!(all["pagination"]["total"], 4);
    assert!(
        all["jobs"][0].get("workflow").is_none(),
        "the list has no details"
    );
    let some = t.get_json("/api/jobs?status=pending,in_progress").await;
    let statuses: Vec<&str> = some["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["status"].as_str())
        .collect();
    assert_eq!(statuses, ["pending", "in_progress"], "{some}");
    let page = t.get_json("/api/jobs?limit=1&offset=1").await;
    assert_eq!(page["jobs"][0]["id"], json!(running), "{page}");
    assert_eq!(page["pagination"]["has_more"], true);
    let by_duration = t
        .get_json("/api/jobs?sort_by=execution_duration&status=completed,failed")
        .await;
    assert_eq!(by_duration["jobs"].as_array().map(Vec::len), Some(2));
    assert_eq!(t.get("/api/jobs?sort_by=name").await.status, 400);
    assert_eq!(t.get("/api/jobs?limit=-1").await.status, 400);
}

#[tokio::test]
async fn cancel_stops_the_running_job_and_unqueues_a_pending_one() {
    let t = start_2026().await;
    t.sim.set_timing(Timing {
        node_ms: 300,
        ..Timing::default()
    });
    let running = uuid();
    let pending = uuid();
    let after = uuid();
    assert_eq!(
        submit(&t, &slow_graph(11, 4), &json!(running)).await.status,
        200
    );
    assert_eq!(
        submit(&t, &slow_graph(12, 4), &json!(pending)).await.status,
        200
    );
    job_until(&t, &running, "in_progress").await;
    let a = t
        .post(&format!("/api/jobs/{pending}/cancel"), &json!({}))
        .await;
    assert_eq!((a.status, a.json()), (200, json!({"cancelled": true})));
    assert_eq!(t.get(&format!("/api/jobs/{pending}")).await.status, 404);
    let a = t
        .post(&format!("/api/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!((a.status, a.json()), (200, json!({"cancelled": true})));
    let cancelled = job_until(&t, &running, "cancelled").await;
    let messages = cancelled["execution_status"]["messages"].to_string();
    assert!(messages.contains("execution_interrupted"), "{cancelled}");
    // A finished job: nothing to do. The next prompt is not hit by the earlier cancel.
    let a = t
        .post(&format!("/api/jobs/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(a.json(), json!({"cancelled": false}));
    t.sim.set_timing(Timing::default());
    assert_eq!(
        submit(&t, &small_graph(13, "after"), &json!(after))
            .await
            .status,
        200
    );
    job_until(&t, &after, "completed").await;
    // The batch form.
    t.sim.set_timing(Timing {
        node_ms: 300,
        ..Timing::default()
    });
    let (x, y) = (uuid(), uuid());
    assert_eq!(submit(&t, &slow_graph(14, 4), &json!(x)).await.status, 200);
    assert_eq!(submit(&t, &slow_graph(15, 4), &json!(y)).await.status, 200);
    job_until(&t, &x, "in_progress").await;
    let a = t
        .post("/api/jobs/cancel", &json!({"job_ids": [x, y, uuid()]}))
        .await;
    assert_eq!((a.status, a.json()), (200, json!({"cancelled": [x, y]})));
    assert_eq!(
        t.post("/api/jobs/cancel", &json!({"ids": []})).await.status,
        400
    );
    job_until(&t, &x, "cancelled").await;
    let q = t.get_json("/queue").await;
    assert_eq!(q["queue_pending"], json!([]), "{q}");
}

#[tokio::test]
async fn videos_are_listed_under_images_with_animated() {
    let t = start_2026().await;
    let g = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 5}},
        "2": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "clip", "codec": "vp9", "fps": 24.0, "crf": 32.0}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 30.0}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto"}}
    });
    let id = t.queue(&g, "newer").await;
    let entry = t.history_entry(&id).await;
    let webm = &entry["outputs"]["2"];
    assert_eq!(webm["animated"], json!([true]), "{entry}");
    assert!(webm.get("videos").is_none());
    assert_eq!(webm["images"][0]["filename"], "clip_00001_.webm", "{entry}");
    let mp4 = &entry["outputs"]["4"];
    assert_eq!(
        mp4["images"][0],
        json!({"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"})
    );
    let view = t
        .get("/view?filename=ComfyUI_00001_.mp4&subfolder=video&type=output")
        .await;
    assert_eq!(
        (view.status, view.content_type.as_str()),
        (200, "video/mp4")
    );
    assert!(t.root().join("output/video/ComfyUI_00001_.mp4").is_file());
}

#[tokio::test]
async fn load_image_lists_its_file_as_an_input_entry() {
    let t = start_2026().await;
    let up = t
        .upload(
            "in.png",
            png_bytes(4, 4, [1, 2, 3]),
            &[("subfolder", "sub")],
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text());
    let g = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "sub/in.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    });
    let id = t.queue(&g, "newer").await;
    let entry = t.history_entry(&id).await;
    assert_eq!(
        entry["outputs"]["1"]["images"][0],
        json!({"filename": "in.png", "subfolder": "sub", "type": "input"}),
        "{entry}"
    );
    assert_eq!(entry["outputs"]["2"]["images"][0]["type"], "temp");
    // Each entry is fetched with its own type.
    for file in [
        &entry["outputs"]["1"]["images"][0],
        &entry["outputs"]["2"]["images"][0],
    ] {
        let path = format!(
            "/view?filename={}&subfolder={}&type={}",
            file["filename"].as_str().unwrap_or(""),
            file["subfolder"].as_str().unwrap_or(""),
            file["type"].as_str().unwrap_or("")
        );
        assert_eq!(t.get(&path).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn subgraph_outputs_keep_their_inner_id_and_name_the_outer_node() {
    let t = start_2026().await;
    let g = json!({
        "12:1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
        "12:3": {"class_type": "SaveImage", "inputs": {"images": ["12:1", 0], "filename_prefix": "sub"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["12:1", 0], "filename_prefix": "top"}}
    });
    let mut ws = t.ws(Some("sg")).await;
    let id = t.queue(&g, "sg").await;
    let frames = ws.until_done(&id).await;
    let entry = t.history_entry(&id).await;
    assert!(entry["outputs"].get("12:3").is_some(), "{entry}");
    assert_eq!(
        entry["meta"]["12:3"],
        json!({"node_id": "12:3", "display_node": "12", "parent_node": "12", "real_node_id": "12:3"})
    );
    assert_eq!(entry["meta"]["5"]["display_node"], "5");
    let executed: Vec<&Value> = frames
        .iter()
        .map(|f| f.json())
        .filter(|f| f["type"] == "executed" && f["data"]["node"] == "12:3")
        .collect();
    assert_eq!(executed.len(), 1, "{frames:?}");
    assert_eq!(executed[0]["data"]["display_node"], "12");

    // The recorded server shows a node on itself.
    let old = start().await;
    let id = old.queue(&g, "sg").await;
    let entry = old.history_entry(&id).await;
    assert_eq!(entry["meta"]["12:3"]["display_node"], "12:3");
}

#[tokio::test]
async fn an_armed_null_status_is_written_with_the_outputs() {
    let t = start_2026().await;
    t.sim.inject(Fault::NullHistoryStatus);
    let id = t.queue(&small_graph(20, "nullstatus"), "newer").await;
    let entry = t.history_entry(&id).await;
    assert_eq!(entry["status"], Value::Null, "{entry}");
    assert_eq!(entry["outputs"]["3"]["images"][0]["type"], "output");
    // One-shot: the next is written as usual.
    let id = t.queue(&small_graph(21, "nullstatus"), "newer").await;
    assert_eq!(t.history_entry(&id).await["status"]["completed"], true);
}
