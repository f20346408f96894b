//! Replays the recorded runs: each prompt of the transcripts is submitted again and the
//! websocket frames (order, and shape frame by frame), the `POST /prompt` answer and the
//! `/history` entry are compared with the recording.

use serde_json::{Value, json};

use crate::support::{
    Frame, TestSim, assert_frames_match, assert_shape, decode_png, recorded, recorded_frames, start,
};

/// The only entry of a recorded `history_*.json`.
fn history_entry(name: &str) -> Value {
    let h = recorded(name);
    h.as_object()
        .and_then(|m| m.values().next().cloned())
        .unwrap_or_else(|| panic!("{name} holds no entry"))
}

/// Submits a recorded history entry's prompt with its client id; returns the prompt id.
async fn resubmit(sim: &TestSim, entry: &Value) -> String {
    let prompt = &entry["prompt"][2];
    let client = entry["prompt"][3]["client_id"].as_str().unwrap_or_default();
    sim.queue(prompt, client).await
}

async fn run_recorded(
    sim: &TestSim,
    history: &str,
    transcript: &str,
    feature_flags: bool,
) -> (String, Vec<Frame>) {
    let entry = history_entry(history);
    let client = entry["prompt"][3]["client_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut ws = sim.ws(Some(&client)).await;
    if feature_flags {
        ws.send_feature_flags().await;
    }
    let mut frames = vec![ws.next_frame().await];
    if feature_flags {
        frames.push(ws.next_frame().await);
    }
    let id = resubmit(sim, &entry).await;
    frames.extend(ws.until_done(&id).await);
    assert_frames_match(&recorded_frames(transcript), &frames);
    let ours = sim.history_entry(&id).await;
    assert_shape(&entry, &ours);
    assert_eq!(
        ours["prompt"][2], entry["prompt"][2],
        "the queued prompt is kept as sent"
    );
    (id, frames)
}

#[tokio::test]
async fn a_successful_run_then_its_identical_resubmission() {
    let sim = start().await;
    let request = recorded("prompt_request_success.json");
    let response = recorded("prompt_response_success.json");
    let client = request["client_id"].as_str().unwrap_or_default();
    let mut ws = sim.ws(Some(client)).await;
    let mut frames = vec![ws.next_frame().await];
    let answer = sim.post("/prompt", &request).await;
    assert_eq!(
        u64::from(answer.status),
        response["status"].as_u64().unwrap_or(0)
    );
    assert_eq!(
        answer.content_type,
        response["content_type"].as_str().unwrap_or("")
    );
    assert_shape(&response["body_json"], &answer.json());
    let id = answer.json()["prompt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    frames.extend(ws.until_done(&id).await);
    assert_frames_match(&recorded_frames("ws_success.jsonl"), &frames);
    let entry = sim.history_entry(&id).await;
    assert_shape(&history_entry("history_success.json"), &entry);
    let output = entry["outputs"]["3"]["images"][0].clone();
    assert_eq!(output["filename"], "lab_success_00001_.png");

    // The file matches the recorded `/view` answer, pixel for pixel.
    let view = sim
        .get("/view?filename=lab_success_00001_.png&type=output&subfolder=")
        .await;
    let info = recorded("view_info.json");
    assert_eq!(view.status, 200);
    assert_eq!(
        view.content_type,
        info["headers"]["Content-Type"].as_str().unwrap_or("")
    );
    assert_eq!(
        view.headers
            .get("content-disposition")
            .and_then(|v| v.to_str().ok()),
        Some("filename=\"lab_success_00001_.png\"")
    );
    let (w, h, pixels, channels, text) = decode_png(&view.bytes);
    assert_eq!(json!([w, h]), info["pil_size"]);
    assert_eq!(channels, 3, "mode {}", info["pil_mode"]);
    assert_eq!(json!(pixels[..3]), info["pixel_0_0"]);
    assert_eq!(json!(text), info["png_text_chunks"]);
    let recorded_png =
        std::fs::read(crate::support::recorded_path("view_output.png")).unwrap_or_default();
    let (rw, rh, rpixels, _, _) = decode_png(&recorded_png);
    assert_eq!((rw, rh), (w, h));
    assert_eq!(
        rpixels, pixels,
        "the simulated image equals the one ComfyUI saved"
    );

    // The same prompt again, from another client: everything cached, the old file replayed.
    let cache_entry = history_entry("history_identical_resubmit.json");
    let (id2, frames) = run_recorded(
        &sim,
        "history_identical_resubmit.json",
        "ws_identical_resubmit.jsonl",
        false,
    )
    .await;
    let executed = frames
        .iter()
        .find(|f| f.kind() == "executed")
        .map(|f| f.json().clone());
    assert_eq!(
        executed.map(|e| e["data"]["output"]["images"][0].clone()),
        Some(output.clone())
    );
    let cached = frames
        .iter()
        .find(|f| f.kind() == "execution_cached")
        .map(|f| f.json()["data"]["nodes"].clone());
    assert_eq!(cached, Some(json!(["1", "2", "3"])));
    let entry = sim.history_entry(&id2).await;
    assert_shape(&cache_entry["outputs"], &entry["outputs"]);
    assert_eq!(entry["outputs"]["3"]["images"][0], output);

    // `/history?max_items=2` holds both, oldest first.
    let two = sim.get_json("/history?max_items=2").await;
    let keys: Vec<&String> = two
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, [&id, &id2]);
    let recorded_two = recorded("history_max_items_2.json");
    let recorded_entries: Vec<&Value> = recorded_two
        .as_object()
        .map(|m| m.values().collect())
        .unwrap_or_default();
    assert_eq!(recorded_entries.len(), 2);
    assert_shape(recorded_entries[0], &two[&id]);
    assert_shape(recorded_entries[1], &two[&id2]);
}

#[tokio::test]
async fn execution_errors_then_a_run_whose_node_swallows_its_error() {
    let sim = start().await;
    // Saving outside output/ fails in SaveImage, after nodes 1 and 2 ran.
    let (_, frames) = run_recorded(
        &sim,
        "history_execution_error_save_outside_output.json",
        "ws_execution_error_save_outside_output.jsonl",
        false,
    )
    .await;
    let error = frames
        .iter()
        .find(|f| f.kind() == "execution_error")
        .map(|f| f.json()["data"].clone());
    let error = error.unwrap_or_default();
    let recorded_error = &history_entry("history_execution_error_save_outside_output.json")["status"]
        ["messages"][2][1];
    for key in ["node_id", "node_type", "executed", "exception_type"] {
        assert_eq!(error[key], recorded_error[key], "{key}");
    }
    let message = error["exception_message"].as_str().unwrap_or_default();
    assert!(message.starts_with("**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: "), "{message}");
    assert!(message.ends_with('\n'), "{message:?}");
    assert_eq!(
        error["current_inputs"]["filename_prefix"],
        json!(["../../escape"])
    );
    assert_eq!(error["current_outputs"], recorded_error["current_outputs"]);

    // Next, RegexExtract with an invalid pattern returns "" and the run succeeds; its
    // EmptyImage (8×8, black) is the one the failed run computed, so it is cached.
    let (id, frames) = run_recorded(
        &sim,
        "history_NOT_an_error_invalid_regex_is_swallowed.json",
        "ws_NOT_an_error_invalid_regex_is_swallowed.jsonl",
        false,
    )
    .await;
    let cached = frames
        .iter()
        .find(|f| f.kind() == "execution_cached")
        .map(|f| f.json()["data"]["nodes"].clone());
    assert_eq!(cached, Some(json!(["3"])));
    let entry = sim.history_entry(&id).await;
    assert_eq!(entry["outputs"]["2"], json!({"text": [""]}));
}

#[tokio::test]
async fn a_loadimage_of_something_not_an_image_fails_while_executing() {
    let sim = start().await;
    let up = sim
        .upload(
            "lab_not_an_image.png",
            b"this is not an image".to_vec(),
            &[],
        )
        .await;
    assert_eq!(up.status, 200);
    let (_, frames) = run_recorded(
        &sim,
        "history_execution_error_loadimage_not_an_image.json",
        "ws_execution_error_loadimage_not_an_image.jsonl",
        false,
    )
    .await;
    let recorded_error = &history_entry("history_execution_error_loadimage_not_an_image.json")["status"]
        ["messages"][2][1];
    let error = frames
        .iter()
        .find(|f| f.kind() == "execution_error")
        .map(|f| f.json()["data"].clone())
        .unwrap_or_default();
    for key in [
        "node_id",
        "node_type",
        "executed",
        "exception_type",
        "current_inputs",
        "current_outputs",
    ] {
        assert_eq!(error[key], recorded_error[key], "{key}");
    }
    let message = error["exception_message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("cannot identify image file '")
            && message.ends_with("lab_not_an_image.png'\n"),
        "{message:?}"
    );
}

/// The binary frames: SaveImageWebsocket previews (legacy or with metadata) and GetImageSize's
/// text, checked down to their headers.
#[tokio::test]
async fn binary_frames_with_and_without_the_feature_flags_handshake() {
    for (history, transcript, flags) in [
        (
            "history_binary_no_feature_flags.json",
            "ws_binary_no_feature_flags.jsonl",
            false,
        ),
        (
            "history_binary_with_feature_flags.json",
            "ws_binary_with_feature_flags.jsonl",
            true,
        ),
    ] {
        let sim = start().await;
        let (id, frames) = run_recorded(&sim, history, transcript, flags).await;
        if flags {
            assert_eq!(
                frames[1].json(),
                &json!({"type": "feature_flags", "data": recorded("features.json")})
            );
        }
        let recorded_binary: Vec<Value> = recorded_frames(transcript)
            .into_iter()
            .filter_map(|f| match f {
                Frame::RecordedBinary(v) => Some(v),
                _ => None,
            })
            .collect();
        let ours: Vec<Vec<u8>> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Binary(b) => Some(b.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ours.len(), recorded_binary.len());
        for (bytes, want) in ours.iter().zip(&recorded_binary) {
            let word = |at: usize| {
                u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            };
            assert_eq!(u64::from(word(0)), want["event_type"].as_u64().unwrap_or(0));
            match want["event_name"].as_str() {
                Some("PREVIEW_IMAGE") => {
                    assert_eq!(word(4), 2, "PNG");
                    assert_eq!(hex(&bytes[8..16]), want["image_magic_hex"]);
                }
                Some("PREVIEW_IMAGE_WITH_METADATA") => {
                    let len = word(4) as usize;
                    let metadata: Value =
                        serde_json::from_slice(&bytes[8..8 + len]).unwrap_or_default();
                    assert_shape(&want["metadata"], &metadata);
                    assert_eq!(metadata["prompt_id"], json!(id));
                    assert_eq!(metadata["node_id"], want["metadata"]["node_id"]);
                    assert_eq!(hex(&bytes[8 + len..16 + len]), want["image_magic_hex"]);
                }
                Some("TEXT") => {
                    let len = word(4) as usize;
                    assert_eq!(
                        json!(String::from_utf8_lossy(&bytes[8..8 + len])),
                        want["node_id"]
                    );
                    assert_eq!(
                        json!(String::from_utf8_lossy(&bytes[8 + len..])),
                        want["text"]
                    );
                    assert_eq!(bytes.len() as u64, want["len"].as_u64().unwrap_or(0));
                }
                other => panic!("unexpected recorded binary {other:?}"),
            }
        }
    }
}

fn hex(bytes: &[u8]) -> Value {
    json!(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
