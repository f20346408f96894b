//! The recorded answers of the plain endpoints: startup state (`queue_empty_at_startup.json`,
//! `queue_idle.json`, `history_empty_at_startup.json`, `prompt.json`), `system_stats`
//! (plain and under `/api`), the catalogue, `features`, `extensions`, `embeddings`, `models`,
//! uploads (`upload_and_loadimage.json`) and the `/view` variants (`view_info.json`).
//!
//! Not replayed: `timing_64px.json` and `timing_512px.json` are latency statistics of the real
//! server, a reference for benchmarks rather than a contract a test could check.

use serde_json::{Value, json};

use crate::support::{Answer, TestSim, assert_shape, png_bytes, recorded, start};

fn assert_json(answer: &Answer, want: &Value) {
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content_type, "application/json; charset=utf-8");
    assert_eq!(&answer.json(), want);
}

#[tokio::test]
async fn startup_state_and_fixed_documents() {
    let sim = start().await;
    assert_json(
        &sim.get("/queue").await,
        &recorded("queue_empty_at_startup.json"),
    );
    assert_json(&sim.get("/api/queue").await, &recorded("queue_idle.json"));
    assert_json(
        &sim.get("/history").await,
        &recorded("history_empty_at_startup.json"),
    );
    assert_json(&sim.get("/prompt").await, &recorded("prompt.json"));
    assert_json(&sim.get("/features").await, &recorded("features.json"));
    assert_json(&sim.get("/extensions").await, &recorded("extensions.json"));
    assert_json(&sim.get("/embeddings").await, &recorded("embeddings.json"));
    assert_json(&sim.get("/models").await, &recorded("models.json"));
    assert_json(
        &sim.get("/models/checkpoints").await,
        &recorded("models_checkpoints.json"),
    );
    assert_eq!(sim.get("/models/no_such_folder").await.status, 404);
    for (path, file) in [
        ("/system_stats", "system_stats.json"),
        ("/api/system_stats", "api_system_stats.json"),
    ] {
        let a = sim.get(path).await;
        assert_eq!(a.content_type, "application/json; charset=utf-8");
        assert_shape(&recorded(file), &a.json());
        assert_eq!(a.json()["devices"][0]["type"], "cpu");
    }
}

/// With the recorded server's input files in place, the catalogue is served exactly as it was.
#[tokio::test]
async fn the_catalogue_is_served_as_recorded() {
    let sim = start().await;
    for name in ["lab_not_an_image.png", "lab_upload.png"] {
        std::fs::write(sim.root().join("input").join(name), b"x").unwrap_or_else(|e| panic!("{e}"));
    }
    let all = sim.get("/object_info").await;
    assert_eq!(all.content_type, "application/json; charset=utf-8");
    let all = all.json();
    assert_eq!(all.as_object().map(serde_json::Map::len), Some(496));
    assert!(
        all == recorded("object_info.json"),
        "GET /object_info differs from the recording"
    );
    assert_json(
        &sim.get("/object_info/EmptyImage").await,
        &recorded("object_info_EmptyImage.json"),
    );
    assert_json(
        &sim.get("/api/object_info/LoadImage").await,
        &recorded("object_info_LoadImage.json"),
    );
}

/// The simulator's models extend the loader lists; LoadImage lists `input/`.
#[tokio::test]
async fn models_and_inputs_show_in_the_catalogue() {
    let sim = crate::support::start_with(|c| {
        c.models.insert(
            "checkpoints".into(),
            vec!["b.safetensors".into(), "a.safetensors".into()],
        );
    })
    .await;
    assert_eq!(
        sim.get_json("/models/checkpoints").await,
        json!(["a.safetensors", "b.safetensors"])
    );
    let ckpt = sim.get_json("/object_info/CheckpointLoaderSimple").await;
    assert_eq!(
        ckpt["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0],
        json!(["b.safetensors", "a.safetensors"])
    );
    let load = sim.get_json("/object_info/LoadImage").await;
    assert_eq!(
        load["LoadImage"]["input"]["required"]["image"][0],
        json!(["example.png"])
    );
}

async fn upload_case(
    sim: &TestSim,
    name: &str,
    bytes: Vec<u8>,
    fields: &[(&str, &str)],
    want: &Value,
) {
    let a = sim.upload(name, bytes, fields).await;
    assert_eq!(u64::from(a.status), want["status"].as_u64().unwrap_or(0));
    assert_eq!(a.content_type, want["content_type"].as_str().unwrap_or(""));
    let body: Value =
        serde_json::from_str(want["body"].as_str().unwrap_or("null")).unwrap_or_default();
    assert_eq!(a.json(), body, "{name} {fields:?}");
}

#[tokio::test]
async fn uploads_then_loadimage() {
    let sim = start().await;
    let want = recorded("upload_and_loadimage.json");
    let png = png_bytes(8, 8, [10, 200, 30]);
    upload_case(
        &sim,
        "lab_upload.png",
        png.clone(),
        &[],
        &want["upload_png"],
    )
    .await;
    upload_case(
        &sim,
        "lab_upload.png",
        png.clone(),
        &[],
        &want["upload_png_again_no_overwrite"],
    )
    .await;
    upload_case(
        &sim,
        "lab_not_an_image.png",
        b"plain text".to_vec(),
        &[],
        &want["upload_not_an_image"],
    )
    .await;
    upload_case(
        &sim,
        "lab_upload.png",
        png.clone(),
        &[("subfolder", "labsub"), ("type", "temp")],
        &want["upload_subfolder_temp"],
    )
    .await;
    assert!(sim.root().join("temp/labsub/lab_upload.png").is_file());
    let load = sim.get_json("/object_info/LoadImage").await;
    assert_eq!(
        load["LoadImage"]["input"]["required"]["image"][0],
        want["loadimage_choices_after_upload"]
    );

    // A different file under a taken name gets a numbered name; overwrite replaces.
    let other = sim
        .upload("lab_upload.png", png_bytes(4, 4, [0, 0, 0]), &[])
        .await;
    assert_eq!(other.json()["name"], "lab_upload (1).png");
    let over = sim
        .upload(
            "lab_upload.png",
            png_bytes(4, 4, [0, 0, 0]),
            &[("overwrite", "true")],
        )
        .await;
    assert_eq!(over.json()["name"], "lab_upload.png");
    assert_eq!(
        sim.upload("x.png", png.clone(), &[("subfolder", "../..")])
            .await
            .status,
        400
    );
    assert_eq!(
        sim.upload("x.png", png.clone(), &[("type", "bogus")])
            .await
            .status,
        500
    );

    for (image, key) in [
        ("lab_upload (1).png", "loadimage_good"),
        ("lab_not_an_image.png", "loadimage_bad"),
    ] {
        let prompt = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
        });
        let a = sim.post("/prompt", &json!({"prompt": prompt})).await;
        let post = &want[format!("{key}_post").as_str()];
        assert_eq!(u64::from(a.status), post["status"].as_u64().unwrap_or(0));
        assert_shape(&post["body_json"], &a.json());
        let id = a.json()["prompt_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let entry = sim.history_entry(&id).await;
        assert_eq!(
            entry["status"]["status_str"],
            want[format!("{key}_status_str").as_str()]
        );
    }
}

#[tokio::test]
async fn view_variants() {
    let sim = start().await;
    let id = sim
        .queue(&crate::support::small_graph(0xFF8000, "lab_success"), "c")
        .await;
    sim.history_entry(&id).await;
    let info = recorded("view_info.json");
    for key in [
        "variant_missing_file",
        "variant_no_filename",
        "variant_bad_type",
        "variant_traversal",
        "variant_channel_a",
    ] {
        let case = &info[key];
        let path = case["request"]
            .as_str()
            .unwrap_or("/")
            .replace("lab_success_00002_", "lab_success_00001_");
        let a = sim.get(&path).await;
        assert_eq!(
            u64::from(a.status),
            case["status"].as_u64().unwrap_or(0),
            "{key}"
        );
        assert_eq!(
            a.content_type,
            case["content_type"].as_str().unwrap_or(""),
            "{key}"
        );
        if case["bytes"] == 0 {
            assert!(a.bytes.is_empty(), "{key}");
        }
    }
    let alpha = sim
        .get("/view?filename=lab_success_00001_.png&type=output&channel=a")
        .await;
    let (w, h, pixels, channels, _) = crate::support::decode_png(&alpha.bytes);
    assert_eq!((w, h, channels), (16, 8, 4));
    assert_eq!(
        pixels[3], 255,
        "an image without alpha shows an opaque alpha channel"
    );
    let rgb = sim
        .get("/view?filename=lab_success_00001_.png&type=output&channel=rgb")
        .await;
    assert_eq!(crate::support::decode_png(&rgb.bytes).3, 3);
    assert_eq!(
        sim.get("/view?filename=lab_success_00001_.png&type=output&subfolder=../../")
            .await
            .status,
        403
    );
    assert_eq!(
        sim.get("/view?filename=lab_success_00001_.png%20[output]")
            .await
            .status,
        200
    );
    // `preview=webp;50` is not simulated: the PNG is served as it is (ComfyUI re-encodes).
    let preview = sim
        .get("/view?filename=lab_success_00001_.png&type=output&preview=webp;50")
        .await;
    assert_eq!(
        (preview.status, preview.content_type.as_str()),
        (200, "image/png")
    );
    assert_eq!(
        sim.request(
            "HEAD",
            "/view?filename=lab_success_00001_.png&type=output",
            None
        )
        .await
        .status,
        200
    );
}
