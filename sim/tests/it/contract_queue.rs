//! Replays the recorded queue session (`queue_ops.json`, `queue_busy.json`,
//! `ws_queue_interrupt.jsonl`, `history_interrupted.json`, `ws_observer_other_client.jsonl`),
//! `/free` and the cache (`free_and_cache.json`, `ws_free.jsonl`), and reconnecting mid-run
//! (`ws_reconnect_*`).
//!
//! The recorded session interleaved HTTP calls with node executions; the replay waits for the
//! same `executing` frames before each call, so the same frames come in the same order.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Frame, Ws, assert_frames_match, assert_shape, kinds, recorded, recorded_frames, slow_graph,
    start, start_with,
};

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i[1].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The frames of one prompt, by its id.
fn of_prompt(frames: &[Frame], id: &str) -> Vec<Frame> {
    frames
        .iter()
        .filter(|f| f.json()["data"]["prompt_id"] == id)
        .cloned()
        .collect()
}

fn statuses(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f.kind() == "status")
        .map(|f| {
            f.json()["data"]["status"]["exec_info"]["queue_remaining"]
                .as_u64()
                .unwrap_or(99)
        })
        .collect()
}

async fn until_executing(ws: &mut Ws, seen: &mut Vec<Frame>, node: &str) {
    let more = ws
        .until(|f| f.kind() == "executing" && f.json()["data"]["node"] == node)
        .await;
    seen.extend(more);
}

#[tokio::test]
async fn queue_delete_clear_and_interrupts_as_recorded() {
    let sim = start_with(|c| {
        c.timing.class_ms.insert("ImageBlur".into(), 150);
    })
    .await;
    let ops = recorded("queue_ops.json");
    let busy = recorded("queue_busy.json");
    let interrupted = recorded("history_interrupted.json");
    let slow = interrupted
        .as_object()
        .and_then(|m| m.values().next())
        .map(|e| e["prompt"][2].clone())
        .unwrap_or_default();
    let client = "lab-queue-client";
    let mut ws = sim.ws(Some(client)).await;
    let mut observer = sim.ws(Some("lab-observer")).await;
    let mut frames = vec![ws.next_frame().await];

    // Slow #0 starts before the others are queued.
    let first = sim
        .post("/prompt", &json!({"prompt": slow, "client_id": client}))
        .await;
    assert_shape(&ops["submit_slow_0"]["body_json"], &first.json());
    let id0 = first.json()["prompt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    frames.extend(ws.until(|f| f.kind() == "execution_cached").await);
    let mut others = Vec::new();
    for (i, item) in busy["queue_pending"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .skip(1)
    {
        let a = sim
            .post("/prompt", &json!({"prompt": item[2], "client_id": client}))
            .await;
        assert_shape(
            &ops[format!("submit_slow_{i}").as_str()]["body_json"],
            &a.json(),
        );
        others.push(
            a.json()["prompt_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let front = busy["queue_pending"][0][2].clone();
    let a = sim
        .post("/prompt", &json!({"prompt": front, "client_id": client, "front": true, "prompt_id": "lab-my-own-prompt-id"}))
        .await;
    assert_shape(&ops["submit_front_own_id"]["body_json"], &a.json());
    assert_eq!(a.json()["prompt_id"], "lab-my-own-prompt-id");
    assert!(
        a.json()["number"].as_i64().is_some_and(|n| n < 0),
        "front=true gives a negative number"
    );

    // The queue while busy: the raw heap array, as ComfyUI shows it.
    let queue = sim.get_json("/queue").await;
    assert_shape(&busy, &queue);
    let (s1, s2, s3) = (&others[0], &others[1], &others[2]);
    assert_eq!(ids(&queue["queue_running"]), [id0.as_str()]);
    assert_eq!(
        ids(&queue["queue_pending"]),
        ["lab-my-own-prompt-id", s1, s3, s2]
    );
    assert_eq!(
        sim.get_json("/prompt").await,
        ops["get_prompt_busy"]["body_json"]
    );

    until_executing(&mut ws, &mut frames, "10").await;
    let a = sim.post("/queue", &json!({"delete": [s1]})).await;
    assert_eq!(
        (a.status, a.content_type.as_str(), a.text().as_str()),
        (200, "", "")
    );
    let q = sim.get_json("/queue").await;
    assert_eq!(ids(&q["queue_pending"]), ["lab-my-own-prompt-id", s3, s2]);
    let a = sim.post("/queue", &json!({"clear": true})).await;
    assert_eq!((a.status, a.content_type.as_str()), (200, ""));
    let q = sim.get_json("/queue").await;
    assert_eq!(ids(&q["queue_running"]), [id0.as_str()]);
    assert_eq!(ids(&q["queue_pending"]), Vec::<String>::new());
    let a = sim.post("/interrupt", &json!({"prompt_id": s2})).await;
    assert_eq!((a.status, a.content_type.as_str()), (200, ""));

    until_executing(&mut ws, &mut frames, "11").await;
    let a = sim.request("POST", "/interrupt", None).await;
    assert_eq!((a.status, a.content_type.as_str()), (200, ""));
    frames.extend(ws.until_done(&id0).await);

    // The targeted interrupt, on a fresh slow prompt.
    let mut again = slow.clone();
    again["1"]["inputs"]["color"] = json!(123);
    let target = sim.queue(&again, client).await;
    until_executing(&mut ws, &mut frames, "10").await;
    let a = sim.post("/interrupt", &json!({"prompt_id": target})).await;
    assert_eq!((a.status, a.content_type.as_str()), (200, ""));
    frames.extend(ws.until_done(&target).await);

    let transcript = recorded_frames("ws_queue_interrupt.jsonl");
    assert_eq!(statuses(&frames), statuses(&transcript), "status frames");
    let recorded_ids: Vec<String> = transcript
        .iter()
        .filter(|f| f.kind() == "execution_start")
        .map(|f| {
            f.json()["data"]["prompt_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(recorded_ids.len(), 2);
    for (rec, ours) in recorded_ids.iter().zip([&id0, &target]) {
        assert_frames_match(&of_prompt(&transcript, rec), &of_prompt(&frames, ours));
    }
    let interrupted_frame = frames
        .iter()
        .find(|f| f.kind() == "execution_interrupted")
        .map(|f| f.json()["data"].clone());
    let interrupted_frame = interrupted_frame.unwrap_or_default();
    assert_eq!(interrupted_frame["node_id"], "12");
    assert_eq!(interrupted_frame["node_type"], "ImageBlur");

    // History: only the interrupted prompts, shaped as recorded.
    let entry = sim.history_entry(&id0).await;
    let want = interrupted
        .as_object()
        .and_then(|m| m.values().next())
        .cloned()
        .unwrap_or_default();
    assert_shape(&want, &entry);
    assert_eq!(entry["status"]["status_str"], "error");
    assert_eq!(entry["status"]["completed"], false);
    for (id, want) in ops["in_history"].as_object().into_iter().flatten() {
        let ours = if id.starts_with("d89") {
            id0.clone()
        } else if id == "lab-my-own-prompt-id" {
            id.clone()
        } else {
            continue;
        };
        let present = sim
            .get_json(&format!("/history/{ours}"))
            .await
            .get(&ours)
            .is_some();
        assert_eq!(json!(present), *want, "{id}");
    }
    for id in &others {
        assert_eq!(sim.get_json(&format!("/history/{id}")).await, json!({}));
    }

    // A socket with another client id saw only `status`, the same ones.
    let mut seen = Vec::new();
    while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(200), observer.next()).await
    {
        seen.push(f);
    }
    let want = recorded_frames("ws_observer_other_client.jsonl");
    assert_eq!(kinds(&seen), kinds(&want));
    assert_eq!(statuses(&seen), statuses(&want));
    assert_shape(want[0].json(), seen[0].json());
}

#[tokio::test]
async fn free_empties_the_cache_and_history_deletes() {
    let sim = start().await;
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    });
    let want = recorded("free_and_cache.json");
    let mut ws = sim.ws(Some("lab-free-client")).await;
    let mut frames = vec![ws.next_frame().await];
    let mut cached = Vec::new();
    let mut last = String::new();
    for step in ["first", "identical_before_free", "identical_after_free"] {
        if step == "identical_after_free" {
            let a = sim
                .post(
                    "/free",
                    &json!({"unload_models": true, "free_memory": true}),
                )
                .await;
            assert_eq!(
                a.status,
                u16::try_from(want["free_response"]["status"].as_u64().unwrap_or(0)).unwrap_or(0)
            );
            assert_eq!(a.content_type, "");
        }
        last = sim.queue(&graph, "lab-free-client").await;
        let run = ws.until_done(&last).await;
        let nodes = run
            .iter()
            .find(|f| f.kind() == "execution_cached")
            .map(|f| f.json()["data"]["nodes"].clone());
        assert_eq!(nodes.as_ref(), Some(&want[step]), "{step}");
        cached.push(nodes);
        frames.extend(run);
    }
    assert_frames_match(&recorded_frames("ws_free.jsonl"), &frames);
    let a = sim.post("/history", &json!({"delete": [last]})).await;
    assert_eq!((a.status, a.content_type.as_str()), (200, ""));
    assert_eq!(
        sim.get_json(&format!("/history/{last}")).await,
        want["history_after_delete"]
    );
}

/// Waits until the simulator reports `node` started for `prompt_id`.
async fn until_started(sim: &crate::support::TestSim, prompt_id: &str, node: &str) {
    for _ in 0..500 {
        let started = sim.sim.timeline().iter().any(|e| {
            e.prompt_id == prompt_id
                && matches!(&e.event, comfy_sim::TimelineEvent::NodeStarted { node: n, .. } if n == node)
        });
        if started {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("node {node} never started");
}

/// Connecting with the running prompt's client id mid-run: `status`, then `executing` with
/// the running node (and nothing else), then the rest of the run, as in both recorded parts.
#[tokio::test]
async fn reconnecting_mid_run_hears_the_running_node() {
    let sim = start_with(|c| {
        c.timing.class_ms.insert("EmptyImage".into(), 150);
        c.timing.class_ms.insert("ImageBlur".into(), 150);
    })
    .await;
    let summary = recorded("ws_reconnect_summary.json");
    let mut anonymous = sim.ws(None).await;
    let first = anonymous.next_frame().await;
    assert_shape(&summary["no_client_id_first_frame"], first.json());
    let sid = first.json()["data"]["sid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        sid.len() == 32 && sid.chars().all(|c| c.is_ascii_hexdigit()),
        "{sid}"
    );

    let id = sim.queue(&slow_graph(77, 3), "lab-reconnect").await;
    until_started(&sim, &id, "1").await;
    let mut ws = sim.ws(Some("lab-reconnect")).await;
    let part1 = recorded_frames("ws_reconnect_part1.jsonl");
    let mut frames = Vec::new();
    for _ in 0..part1.len() {
        frames.push(ws.next_frame().await);
    }
    assert_frames_match(&part1, &frames);
    assert_eq!(
        frames[1].json(),
        &json!({"type": "executing", "data": {"node": "1"}})
    );
    drop(ws);

    until_started(&sim, &id, "11").await;
    let mut ws = sim.ws(Some("lab-reconnect")).await;
    let part2 = ws.until_done(&id).await;
    assert_frames_match(&recorded_frames("ws_reconnect_part2.jsonl"), &part2);
    let want = summary["part2_first_frames"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (w, f) in want.iter().zip(&part2) {
        assert_shape(w, f.json());
    }
    assert_eq!(
        part2[1].json(),
        &json!({"type": "executing", "data": {"node": "11"}})
    );
}
