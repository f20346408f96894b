//! Replays every recorded bad request (`errors/*.json`) and compares status, content type and
//! body with what ComfyUI answered. Bodies must be equal, except the id and number a
//! successful submission is given.

use serde_json::Value;

use crate::support::{Answer, TestSim, shared_dir, start};

/// The recorded request, replayed: JSON bodies as JSON, raw bodies as they were.
async fn replay(sim: &TestSim, request: &Value) -> Answer {
    let method = request["method"].as_str().unwrap_or("GET");
    let path = request["path"].as_str().unwrap_or("/");
    let body = match (&request.get("json"), &request.get("raw_body")) {
        (Some(json), _) => Some(json.to_string().into_bytes()),
        (None, Some(Value::String(raw))) => Some(raw.clone().into_bytes()),
        _ => None,
    };
    sim.request(method, path, body).await
}

/// The recorded body with what legitimately differs blanked out.
fn comparable(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        for key in ["prompt_id", "number"] {
            if map.contains_key(key) {
                map.insert(key.to_owned(), Value::Null);
            }
        }
    }
    body
}

#[tokio::test]
async fn every_recorded_error_is_answered_as_recorded() {
    let dir = shared_dir().join("comfyui/errors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        26,
        "the README promises 26 recorded bad requests"
    );
    let sim = start().await;
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = &case["response"];
        let got = replay(&sim, &case["request"]).await;
        let mut problems = Vec::new();
        if Some(u64::from(got.status)) != want["status"].as_u64() {
            problems.push(format!("status {} != {}", got.status, want["status"]));
        }
        if got.content_type != want["content_type"].as_str().unwrap_or("") {
            problems.push(format!(
                "content type {:?} != {}",
                got.content_type, want["content_type"]
            ));
        }
        match (&want["body_json"], &want["body_text"]) {
            (Value::Null, Value::String(text)) => {
                // The recorder wrote `<N bytes of TYPE>` for bodies it did not keep.
                let expected = if text.starts_with('<') && text.ends_with('>') {
                    ""
                } else {
                    text
                };
                if got.text() != expected {
                    problems.push(format!("body {:?} != {expected:?}", got.text()));
                }
            }
            (body, _) => {
                let actual = serde_json::from_slice::<Value>(&got.bytes).map(comparable);
                match actual {
                    Ok(actual) if actual == comparable(body.clone()) => {}
                    Ok(actual) => problems.push(format!(
                        "body\n  got  {actual}\n  want {}",
                        comparable(body.clone())
                    )),
                    Err(e) => problems.push(format!("body is not JSON: {e}: {}", got.text())),
                }
            }
        }
        for header in ["Allow", "Connection"] {
            if let Some(value) = want["headers"].get(header).and_then(Value::as_str) {
                let ours = got.headers.get(header).and_then(|v| v.to_str().ok());
                if ours != Some(value) {
                    problems.push(format!("header {header}: {ours:?} != {value:?}"));
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "answers differ from the recording:\n{}",
        failures.join("\n")
    );
}
