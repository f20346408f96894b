//! The client test suite: one set of cases, run against the simulator in both its protocols
//! (`tests/sim.rs`: ComfyUI 0.3.64 as recorded, and the 2026 releases) and against a real
//! ComfyUI (`tests/real.rs`, via `scripts/real-comfyui`). Each case takes a [`Target`]: the
//! server, and what differs between them (how to make a graph slow, how it cancels).

#![allow(dead_code)]

use std::time::Duration;

use comfyd::client::{Cancelled, Client, ClientError, Event, Outcome, RunOptions, UploadOptions};
use serde_json::{Value, json};

/// A server to run the suite against.
pub struct Target {
    pub client: Client,
    /// Name of a tiny SD 1.5 checkpoint the server has, if any.
    pub checkpoint: Option<String>,
    /// How many ImageBlur nodes make a prompt take a couple of seconds.
    pub slow_blurs: usize,
    /// Width/height of the slow graph's image.
    pub slow_size: u64,
    /// Whether the server has `POST /api/jobs/{id}/cancel`, where the target knows
    /// (`None`: whatever the client detects is taken as it is).
    pub jobs_cancel: Option<bool>,
}

/// A unique colour per call, so prompts are never served from ComfyUI's cache by accident.
pub fn fresh_color() -> u64 {
    fastrand_u64() % 0xFF_FFFF
}

fn fastrand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

pub fn no_model_graph(width: u64, height: u64, color: u64, prefix: &str) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}
    })
}

pub fn slow_graph(t: &Target, color: u64) -> Value {
    let mut g = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": t.slow_size, "height": t.slow_size, "batch_size": 1, "color": color}}
    });
    let mut prev = "1".to_owned();
    for i in 0..t.slow_blurs {
        let id = format!("{}", 10 + i);
        g[&id] = json!({"class_type": "ImageBlur", "inputs": {"image": [prev, 0], "blur_radius": 31, "sigma": 5.0}});
        prev = id;
    }
    g["3"] = json!({"class_type": "SaveImage", "inputs": {"images": [prev, 0], "filename_prefix": "suite_slow"}});
    g
}

pub fn sd15_graph(checkpoint: &str, seed: u64) -> Value {
    json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 4, "cfg": 7.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a white ceramic mug", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "suite_sd15"}}
    })
}

/// Decodes a PNG: `(width, height, first pixel RGB)`.
pub fn png_info(bytes: &[u8]) -> (u32, u32, [u8; 3]) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("not a PNG: {e}"));
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("PNG frame: {e}"));
    let px = match info.color_type {
        png::ColorType::Rgb | png::ColorType::Rgba => [buf[0], buf[1], buf[2]],
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => [buf[0]; 3],
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, px)
}

/// A small RGB PNG of one colour.
pub fn png_bytes(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<u8> = (0..width * height).flat_map(|_| rgb).collect();
        w.write_image_data(&data).unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

/// ComfyUI inverts in float32 and truncates when saving, so a channel may come out one lower
/// than `255 - c` (the recording saves 0xFF8000 inverted as `[0, 126, 255]`).
fn assert_inverted(px: [u8; 3], c: [u8; 3]) {
    for i in 0..3 {
        let want = 255 - i16::from(c[i]);
        let got = i16::from(px[i]);
        assert!(
            got == want || got == want - 1,
            "channel {i}: {got} is not the inverse of {} (pixel {px:?})",
            c[i]
        );
    }
}

fn rgb(color: u64) -> [u8; 3] {
    [(color >> 16) as u8, (color >> 8) as u8, color as u8]
}

fn opts() -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_secs(300)),
        ..RunOptions::default()
    }
}

async fn run(t: &Target, graph: &Value) -> (comfyd::client::RunReport, Vec<String>) {
    let mut names = Vec::new();
    let report = t
        .client
        .run_prompt(graph, &opts(), &mut |e: &Event| {
            names.push(e.name().to_owned())
        })
        .await
        .unwrap_or_else(|e| panic!("run failed: {e}"));
    (report, names)
}

// ---- the cases ----

/// EmptyImage → ImageInvert → SaveImage: the output is fetched and is the inverted image.
pub async fn no_model_graph_runs_and_outputs_are_fetched(t: &Target) {
    let color = fresh_color();
    let (report, names) = run(t, &no_model_graph(64, 48, color, "suite_nomodel")).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(report.files.len(), 1, "{:?}", report.files);
    let f = &report.files[0];
    assert_eq!(
        (f.node.as_str(), f.kind.as_str(), f.file.kind.as_str()),
        ("3", "images", "output")
    );
    assert!(
        f.file.filename.starts_with("suite_nomodel_") && f.file.filename.ends_with(".png"),
        "{f:?}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dest = dir.path().join("out.png");
    let n = t
        .client
        .download(&f.file, &dest)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&dest).unwrap_or_default();
    assert_eq!(n as usize, bytes.len());
    let (w, h, px) = png_info(&bytes);
    assert_eq!((w, h), (64, 48));
    let c = rgb(color);
    assert_inverted(px, c);
    // The events came in ComfyUI's order and ended the prompt.
    let start = names
        .iter()
        .position(|n| n == "execution_start")
        .unwrap_or_else(|| panic!("{names:?}"));
    let success = names
        .iter()
        .position(|n| n == "execution_success")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert!(
        start < success && names.last().map(String::as_str) == Some("executing"),
        "{names:?}"
    );
    assert_eq!(report.executed, ["1", "2", "3"]);
    assert!(
        report
            .history
            .as_ref()
            .is_some_and(|h| h.status.as_ref().is_some_and(|s| s.completed))
    );
    assert!(report.timings.total >= report.timings.execution);
}

/// An identical prompt is served from cache: every node cached, none executed, same files.
pub async fn identical_resubmission_is_cached(t: &Target) {
    let graph = no_model_graph(32, 32, fresh_color(), "suite_cache");
    let (first, _) = run(t, &graph).await;
    let (second, names) = run(t, &graph).await;
    assert_eq!(second.outcome, Outcome::Success);
    assert_eq!(second.cached, ["1", "2", "3"], "{names:?}");
    assert!(second.executed.is_empty(), "{:?}", second.executed);
    assert_eq!(
        second.files, first.files,
        "a cached run replays the old file names"
    );
}

/// Every class of rejection comes back as `Rejected` with ComfyUI's error types.
pub async fn rejections_are_typed(t: &Target) {
    let ok = no_model_graph(8, 8, 1, "suite_err");
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut g = ok.clone();
    g["2"]["class_type"] = json!("NoSuchNode");
    cases.push(("unknown class", g, "invalid_prompt"));
    let mut g = ok.clone();
    g["1"]["inputs"].as_object_mut().map(|m| m.remove("width"));
    cases.push(("missing input", g, "required_input_missing"));
    let mut g = ok.clone();
    g["1"]["inputs"]["width"] = json!(999_999);
    cases.push(("above max", g, "value_bigger_than_max"));
    let mut g = ok.clone();
    g["1"]["inputs"]["width"] = json!("wide");
    cases.push(("wrong type", g, "invalid_input_type"));
    // A broken link on an output node; on an inner node ComfyUI says
    // `exception_during_inner_validation` instead.
    let mut g = ok.clone();
    g["3"]["inputs"]["images"] = json!(["99", 0]);
    cases.push(("missing node", g, "exception_during_validation"));
    let mut g = ok.clone();
    g["3"]["inputs"]["images"] = json!(["2", 5]);
    cases.push(("bad slot", g, "exception_during_validation"));
    let mut g = ok.clone();
    g["2"]["inputs"]["image"] = json!(["99", 0]);
    cases.push((
        "missing node behind another",
        g,
        "exception_during_inner_validation",
    ));
    let mut g = ok.clone();
    g["4"] = json!({"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}});
    g["3"]["inputs"]["images"] = json!(["4", 0]);
    cases.push(("type mismatch", g, "return_type_mismatch"));
    let mut g = ok.clone();
    g["4"] = json!({"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bogus", "width": 8, "height": 8, "crop": "disabled"}});
    g["3"]["inputs"]["images"] = json!(["4", 0]);
    cases.push(("not in list", g, "value_not_in_list"));
    let mut g = ok.clone();
    g.as_object_mut().map(|m| m.remove("3"));
    cases.push(("no output", g, "prompt_no_outputs"));
    let mut g = ok.clone();
    g["1"] = json!({"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}});
    cases.push(("cycle", g, "prompt_outputs_failed_validation"));
    for (what, graph, expected) in cases {
        match t.client.submit(&graph, "suite-errors", None, None).await {
            Err(ClientError::Rejected(r)) => {
                let mut types: Vec<&str> = vec![r.error.kind.as_str()];
                types.extend(
                    r.node_errors
                        .values()
                        .flat_map(|n| n.errors.iter().map(|e| e.kind.as_str())),
                );
                assert!(
                    types.contains(&expected),
                    "{what}: expected {expected}, got {types:?}"
                );
                assert!(!r.to_string().is_empty());
            }
            other => panic!("{what}: expected a rejection, got {other:?}"),
        }
    }
}

/// One valid and one invalid output: accepted (200) with node_errors, and the valid one runs.
pub async fn partially_valid_prompt_runs_its_valid_output(t: &Target) {
    let mut g = no_model_graph(16, 16, fresh_color(), "suite_partial");
    g["4"] = json!({"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "suite_partial_bad"}});
    let (report, _) = run(t, &g).await;
    assert!(
        report.submitted.node_errors.contains_key("4"),
        "{:?}",
        report.submitted
    );
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.files[0].node, "3");
}

/// A node that fails while executing: `Failed` with ComfyUI's error.
pub async fn execution_errors_are_reported(t: &Target) {
    let name = format!("suite_not_an_image_{}.png", fresh_color());
    let up = t
        .client
        .upload_image(
            b"this is not a png".to_vec(),
            &name,
            &UploadOptions {
                overwrite: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let g = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": up.image_value()}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "suite_bad"}}
    });
    let (report, names) = run(t, &g).await;
    match &report.outcome {
        Outcome::Failed(e) => {
            assert_eq!(e.node_id, "1");
            assert_eq!(e.node_type, "LoadImage");
            assert!(!e.exception_message.is_empty());
            assert!(!e.is_out_of_memory());
        }
        other => panic!("expected a failure, got {other:?} ({names:?})"),
    }
    assert!(report.files.is_empty());
}

/// Upload a PNG, load it, invert it, fetch the result.
pub async fn upload_then_load_image(t: &Target) {
    let name = format!("suite_upload_{}.png", fresh_color());
    let color = [10, 200, 30];
    let up = t
        .client
        .upload_image(
            png_bytes(20, 10, color),
            &name,
            &UploadOptions {
                overwrite: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(up.name, name);
    let g = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": up.image_value()}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "suite_upload"}}
    });
    let (report, _) = run(t, &g).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    // A 2026 server also lists the loaded file (type `input`): not one of the job's files.
    assert_eq!(report.files.len(), 1, "{:?}", report.files);
    assert_eq!(report.files[0].node, "3");
    assert!(
        report.previews.iter().all(|p| p.file.kind != "output"),
        "{:?}",
        report.previews
    );
    let bytes = t
        .client
        .view(&report.files[0].file)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (w, h, px) = png_info(&bytes);
    assert_eq!((w, h), (20, 10));
    assert_inverted(px, color);
}

/// Wait until the prompt is running (its first node executing).
async fn until_running(t: &Target, prompt_id: &str) {
    for _ in 0..600 {
        let q = t.client.queue().await.unwrap_or_else(|e| panic!("{e}"));
        if q.running.iter().any(|i| i.prompt_id == prompt_id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("prompt {prompt_id} never started");
}

/// Interrupting the running prompt ends it as `Interrupted`.
pub async fn interrupt_ends_the_running_prompt(t: &Target) {
    let client = t.client.clone();
    let graph = slow_graph(t, fresh_color());
    let pid = uuid_like();
    let o = RunOptions {
        prompt_id: Some(pid.clone()),
        ..opts()
    };
    let run = tokio::spawn(async move { client.run_prompt(&graph, &o, &mut |_| {}).await });
    until_running(t, &pid).await;
    t.client
        .interrupt(Some(&pid))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = run
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(report.outcome, Outcome::Interrupted { ref node_type, .. } if !node_type.is_empty()),
        "{:?}",
        report.outcome
    );
}

/// A pending prompt can be removed from the queue; the running one is untouched.
pub async fn queue_delete_removes_a_pending_prompt(t: &Target) {
    let a = uuid_like();
    let b = uuid_like();
    t.client
        .submit(&slow_graph(t, fresh_color()), "suite-queue", Some(&a), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    t.client
        .submit(&slow_graph(t, fresh_color()), "suite-queue", Some(&b), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until_running(t, &a).await;
    let q = t.client.queue().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(q.pending.iter().any(|i| i.prompt_id == b), "{q:?}");
    t.client
        .delete_queued(&[&b])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let q = t.client.queue().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!q.contains(&b), "{q:?}");
    assert!(q.running.iter().any(|i| i.prompt_id == a), "{q:?}");
    t.client
        .interrupt(Some(&a))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The deleted prompt never ran.
    for _ in 0..200 {
        if !t
            .client
            .queue()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .contains(&a)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        t.client
            .history(&b)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
}

/// The small endpoints: stats, catalogue, models, free, unknown history.
pub async fn small_endpoints(t: &Target) {
    let stats = t
        .client
        .system_stats()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!stats.system.comfyui_version.is_empty(), "{stats:?}");
    assert!(!stats.devices.is_empty());
    let info = t
        .client
        .object_info()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(info.get("KSampler").is_some() && info.get("SaveImage").is_some());
    let models = t
        .client
        .models("checkpoints")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(c) = &t.checkpoint {
        assert!(models.contains(c), "{models:?}");
    }
    t.client
        .free(true, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        t.client
            .history("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    match t
        .client
        .view(&comfyd::client::FileRef {
            filename: "no_such_file.png".into(),
            subfolder: String::new(),
            kind: "output".into(),
        })
        .await
    {
        Err(ClientError::Http { status: 404, .. }) => {}
        other => panic!("expected a 404, got {other:?}"),
    }
}

/// The SD 1.5 text-to-image graph with the tiny checkpoint, then again after `/free`.
pub async fn sd15_text_to_image(t: &Target) {
    let Some(ckpt) = &t.checkpoint else {
        panic!("this target has no tiny checkpoint")
    };
    for round in 0..2 {
        let (report, names) = run(t, &sd15_graph(ckpt, fresh_color())).await;
        assert_eq!(
            report.outcome,
            Outcome::Success,
            "round {round}: {report:?}"
        );
        assert!(
            names.iter().any(|n| n == "progress"),
            "sampler progress is reported: {names:?}"
        );
        let bytes = t
            .client
            .view(&report.files[0].file)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(png_info(&bytes).0, 64);
        t.client
            .free(true, false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A prompt id of the only form 2026 servers take: a canonical lowercase UUID.
pub fn uuid_like() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `str(uuid.UUID(id)) == id`: 8-4-4-4-12 lowercase hex digits.
pub fn is_canonical_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.to_string() == id)
}

/// The prompt ids the client makes are canonical UUIDs, which every server takes.
pub async fn generated_prompt_ids_are_canonical_uuids(t: &Target) {
    let (report, _) = run(t, &no_model_graph(8, 8, fresh_color(), "suite_ids")).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert!(is_canonical_uuid(&report.prompt_id), "{}", report.prompt_id);
    let submitted = t
        .client
        .submit(
            &no_model_graph(8, 8, fresh_color(), "suite_ids"),
            "suite-ids",
            Some(&uuid_like()),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(is_canonical_uuid(&submitted.prompt_id), "{submitted:?}");
}

/// `Client::cancel` stops the running prompt and takes a pending one off the queue, by the
/// server's jobs API where it has one, else by queue delete and interrupt.
pub async fn cancel_stops_the_running_prompt_and_unqueues_a_pending_one(t: &Target) {
    let client = t.client.clone();
    let graph = slow_graph(t, fresh_color());
    let running = uuid_like();
    let o = RunOptions {
        prompt_id: Some(running.clone()),
        ..opts()
    };
    let run = tokio::spawn(async move { client.run_prompt(&graph, &o, &mut |_| {}).await });
    until_running(t, &running).await;
    let pending = uuid_like();
    t.client
        .submit(
            &slow_graph(t, fresh_color()),
            "suite-cancel",
            Some(&pending),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let has = t
        .client
        .has_jobs_cancel()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(expected) = t.jobs_cancel {
        assert_eq!(has, expected, "the detected cancel route");
    }
    let way = t
        .client
        .cancel(&pending)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let expected_way = |cancelled: bool| {
        if has {
            Cancelled::JobsApi { cancelled }
        } else {
            Cancelled::QueueAndInterrupt
        }
    };
    assert_eq!(way, expected_way(true));
    let q = t.client.queue().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!q.contains(&pending), "{q:?}");
    let way = t
        .client
        .cancel(&running)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(way, expected_way(true));
    let report = run
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(report.outcome, Outcome::Interrupted { .. }),
        "{:?}",
        report.outcome
    );
    // Cancelling a finished prompt does nothing, and says so where the server can.
    let way = t
        .client
        .cancel(&running)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(way, expected_way(false));
    assert!(
        t.client
            .history(&pending)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "the cancelled pending prompt never ran"
    );
}

/// A PreviewImage's temp file is listed apart from the job's files, and can be fetched with
/// its own type.
pub async fn previews_are_not_job_files(t: &Target) {
    let mut g = no_model_graph(16, 16, fresh_color(), "suite_preview");
    g["4"] = json!({"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}});
    let (report, _) = run(t, &g).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(report.files.len(), 1, "{:?}", report.files);
    assert_eq!(
        (
            report.files[0].node.as_str(),
            report.files[0].file.kind.as_str()
        ),
        ("3", "output")
    );
    let previews: Vec<_> = report.previews.iter().filter(|p| p.node == "4").collect();
    assert_eq!(previews.len(), 1, "{:?}", report.previews);
    assert_eq!(previews[0].file.kind, "temp");
    let bytes = t
        .client
        .view(&previews[0].file)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(png_info(&bytes).0, 16);
}

/// Declares one `#[tokio::test]` per case, each getting its target from `$target`.
#[macro_export]
macro_rules! cases {
    ($target:path $(, #[$attr:meta])?) => {
        $crate::cases!(@each $target, [$(#[$attr])?],
            no_model_graph_runs_and_outputs_are_fetched,
            identical_resubmission_is_cached,
            rejections_are_typed,
            partially_valid_prompt_runs_its_valid_output,
            execution_errors_are_reported,
            upload_then_load_image,
            interrupt_ends_the_running_prompt,
            queue_delete_removes_a_pending_prompt,
            small_endpoints,
            sd15_text_to_image,
            generated_prompt_ids_are_canonical_uuids,
            cancel_stops_the_running_prompt_and_unqueues_a_pending_one,
            previews_are_not_job_files
        );
    };
    (@each $target:path, $attrs:tt, $($case:ident),*) => {
        $( $crate::cases!(@one $target, $attrs, $case); )*
    };
    (@one $target:path, [$($attr:tt)*], $case:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $case() {
            let t = $target().await;
            suite::$case(&t.target).await;
        }
    };
}
