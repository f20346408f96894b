//! `comfyd serve` against real processes: the simulator, `comfyd run` daemons and `comfyd
//! serve` sharing one job directory, driven over HTTP with reqwest.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use comfy_sim::Timing;
use common::{examples, names};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A child process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Paths of one test's job directory, outputs and inputs.
struct Dirs {
    _t: tempfile::TempDir,
    root: PathBuf,
    jobs: PathBuf,
    outputs: PathBuf,
    inputs: PathBuf,
}

fn dirs() -> Dirs {
    let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = t.path().to_path_buf();
    let d = Dirs {
        jobs: root.join("jobs"),
        outputs: root.join("outputs"),
        inputs: root.join("inputs"),
        root,
        _t: t,
    };
    std::fs::create_dir_all(&d.inputs).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// Starts `cmd`, draining its stderr; returns when a line contains `marker`, with what follows.
fn spawn_until(mut cmd: Command, marker: &str) -> (Killed, String) {
    cmd.env("COMFYD_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting comfyd: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no `{marker}` from comfyd; it said:\n{}", seen.join("\n"));
        };
        if let Some(rest) = line.split(marker).nth(1) {
            let rest = rest.to_owned();
            // Keep draining in the background.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, rest);
        }
        seen.push(line);
    }
}

/// `comfyd serve` on a free loopback port; its base URL.
fn serve(d: &Dirs, extra: &[&str]) -> (Killed, String) {
    serve_repo(d, &examples(), extra)
}

/// `comfyd serve` of the workflows in `repo`.
fn serve_repo(d: &Dirs, repo: &Path, extra: &[&str]) -> (Killed, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfyd"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--jobs"])
        .arg(&d.jobs)
        .arg("--workflows")
        .arg(repo)
        .arg("--outputs")
        .arg(&d.outputs)
        .arg("--inputs")
        .arg(&d.inputs)
        .args(extra)
        .current_dir(&d.root);
    let (child, rest) = spawn_until(cmd, "serving at http://");
    let addr = rest.split('/').next().unwrap_or_default().to_owned();
    (child, format!("http://{addr}"))
}

/// `comfyd run` against the simulator at `url`.
fn daemon(d: &Dirs, url: &str, extra: &[&str]) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfyd"));
    cmd.args(["run", "--jobs"])
        .arg(&d.jobs)
        .arg("--workflows")
        .arg(examples())
        .arg("--outputs")
        .arg(&d.outputs)
        .arg("--inputs")
        .arg(&d.inputs)
        .args(["--comfy-url", url, "--settle-ms", "0"])
        .args(extra)
        .current_dir(&d.root);
    spawn_until(cmd, "workflows loaded").0
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} not JSON ({e}): {text}")),
    )
}

async fn post(base: &str, workflow: &str, body: Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = client()
        .post(format!("{base}/v1/workflows/{workflow}/runs"))
        .json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    json_of(req.send().await.unwrap_or_else(|e| panic!("POST: {e}"))).await
}

async fn get_run(base: &str, id: &str) -> Value {
    let (status, v) = json_of(
        client()
            .get(format!("{base}/v1/runs/{id}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET: {e}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Polls a run until `done(status)`; the run then.
async fn wait_for(base: &str, id: &str, limit: Duration, done: impl Fn(&str) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = get_run(base, id).await;
        if done(v["status"].as_str().unwrap_or_default()) {
            return v;
        }
        assert!(Instant::now() < deadline, "run {id} stayed {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_final(s: &str) -> bool {
    matches!(s, "done" | "failed" | "cancelled")
}

/// Every file under `dir`, relative, skipping the folders in `skip`.
fn tree(dir: &Path, skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(dir)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            if skip
                .iter()
                .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_http_is_a_job_of_the_store_and_comes_back_done_with_its_outputs() {
    let d = dirs();
    let sim = common::start_sim(&d.root.join("sim"), Timing::default()).await;
    let (_serve, base) = serve(&d, &[]);
    // Queued while no daemon runs: its job file waits in the inbox under the run id.
    let (status, created) = post(
        &base,
        "txt2img",
        json!({"inputs": {"prompt": "a mug", "seed": 7}}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(created["status"], "queued");
    assert_eq!(created["url"], format!("/v1/runs/{id}"));
    let job: Value = serde_json::from_slice(
        &std::fs::read(d.jobs.join("inbox").join(format!("{id}.json"))).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(
        job,
        json!({"workflow": "txt2img@1.0.0", "id": id, "inputs": {"prompt": "a mug", "seed": 7}})
    );
    let queued = get_run(&base, &id).await;
    assert_eq!(
        (queued["status"].as_str(), queued["position"].as_u64()),
        (Some("queued"), Some(0))
    );
    // Its events, read while a daemon runs it.
    let events = tokio::spawn({
        let url = format!("{base}/v1/runs/{id}/events");
        async move {
            let resp = client()
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                resp.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("text/event-stream")
            );
            resp.text().await.unwrap_or_default()
        }
    });
    let _daemon = daemon(&d, &sim.url(), &[]);
    let done = wait_for(&base, &id, Duration::from_secs(60), is_final).await;
    assert_eq!(done["status"], "done", "{done}");
    // The same id names the daemon's output folder.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(d.outputs.join(&id).join("manifest.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(manifest["job"]["id"], id.as_str());
    let outputs = done["outputs"].as_array().cloned().unwrap_or_default();
    assert_eq!(outputs.len(), 1, "{done}");
    let o = &outputs[0];
    assert_eq!(
        (o["kind"].as_str(), o["media_type"].as_str()),
        (Some("images"), Some("image/png"))
    );
    let on_disk = std::fs::read(
        d.outputs
            .join(&id)
            .join(o["file"].as_str().unwrap_or_default()),
    )
    .unwrap_or_default();
    assert_eq!(o["size"].as_u64(), Some(on_disk.len() as u64));
    // The file, whole and in part.
    let url = format!("{base}{}", o["url"].as_str().unwrap_or_default());
    let whole = client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(
        whole
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    let bytes = whole.bytes().await.unwrap_or_default();
    assert_eq!(bytes.as_ref(), on_disk.as_slice());
    use sha2::Digest;
    assert_eq!(
        o["sha256"].as_str(),
        Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str())
    );
    let part = client()
        .get(&url)
        .header("Range", "bytes=1-3")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some(format!("bytes 1-3/{}", on_disk.len()).as_str())
    );
    assert_eq!(part.bytes().await.unwrap_or_default().as_ref(), b"PNG");
    let outside = client()
        .get(&url)
        .header("Range", format!("bytes={}-", on_disk.len()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let missing = client()
        .get(format!("{base}/v1/runs/{id}/outputs/graph.json"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        missing.status(),
        StatusCode::NOT_FOUND,
        "only files the manifest lists"
    );
    // The events: one per change, the last the final state, then the stream ends.
    let text = tokio::time::timeout(Duration::from_secs(30), events)
        .await
        .unwrap_or_else(|_| panic!("the event stream did not end"))
        .unwrap_or_default();
    let states: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    assert!(text.contains("event: status"), "{text}");
    assert_eq!(
        states.first().map(|s| s["status"].clone()),
        Some(json!("queued")),
        "{text}"
    );
    assert_eq!(states.last(), Some(&done), "{text}");
    // The history lists it, newest first, paged.
    let (_, second) = post(
        &base,
        "txt2img",
        json!({"inputs": {"prompt": "a cup"}}),
        None,
    )
    .await;
    let (status, page) = json_of(
        client()
            .get(format!("{base}/v1/runs?limit=1"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["runs"][0]["id"], second["id"]);
    let next = page["next"].as_str().unwrap_or_default().to_owned();
    let (_, page) = json_of(
        client()
            .get(format!("{base}/v1/runs?limit=1&cursor={next}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(page["runs"][0]["id"], id.as_str());
    assert_eq!(page["next"], Value::Null);
    // The workflow index and one workflow's schema.
    let (_, index) = json_of(
        client()
            .get(format!("{base}/v1/workflows"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert!(index["workflows"].as_array().is_some_and(|w| {
        w.iter()
            .any(|w| w["name"] == "txt2img" && w["version"] == "1.0.0")
    }));
    let (_, w) = json_of(
        client()
            .get(format!("{base}/v1/workflows/txt2img"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(w["schema"]["properties"]["steps"]["maximum"], 60);
    // The compiler's RJSF uiSchema, field order first.
    assert_eq!(w["uischema"]["ui:order"][0], "prompt", "{}", w["uischema"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_stored_by_content_and_run_as_file_inputs() {
    let d = dirs();
    let sim = common::start_sim(&d.root.join("sim"), Timing::default()).await;
    let (_serve, base) = serve(&d, &[]);
    let _daemon = daemon(&d, &sim.url(), &[]);
    let png = tiny_png();
    let form = |bytes: Vec<u8>, name: &str| {
        reqwest::multipart::Form::new()
            .text(
                "inputs",
                r#"{"prompt": "the same, in blue", "denoise": 0.5}"#,
            )
            .part(
                "image",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
            )
    };
    let (status, created) = json_of(
        client()
            .post(format!("{base}/v1/workflows/img2img/runs"))
            .multipart(form(png.clone(), "cat.PNG"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    use sha2::Digest;
    let stored = format!("uploads/{}.png", hex::encode(sha2::Sha256::digest(&png)));
    assert!(d.inputs.join(&stored).is_file(), "{stored}");
    let done = wait_for(&base, &id, Duration::from_secs(60), is_final).await;
    assert_eq!(done["status"], "done", "{done}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(d.outputs.join(&id).join("manifest.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(manifest["input_files"][0]["source"], stored.as_str());
    // Client names that try to choose a path are refused, and nothing is stored for them.
    for bad in [
        "../evil.png",
        "/etc/evil.png",
        "a/../../evil.png",
        "evil\0.png",
    ] {
        let (status, e) = json_of(
            client()
                .post(format!("{base}/v1/workflows/img2img/runs"))
                .multipart(form(b"other bytes".to_vec(), bad))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        if bad.contains('\0') {
            // A NUL cannot even be in a part's header: the form is refused as malformed.
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {e}");
        } else {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {e}");
            assert_eq!(e["error"]["details"][0]["input"], "image", "{e}");
        }
    }
    assert_eq!(names(&d.inputs.join("uploads")).len(), 1);
    // A path given as JSON must lie in the inputs root.
    let (status, e) = post(
        &base,
        "img2img",
        json!({"inputs": {"image": "../../etc/passwd"}}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["details"][0]["input"], "image");
}

fn tiny_png() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, 8, 8);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap_or_else(|e| panic!("{e}"));
        w.write_image_data(&[200u8; 8 * 8 * 3])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_one_run_across_concurrent_retries_and_a_restart() {
    let d = dirs();
    let (serve1, base) = serve(&d, &[]);
    let body = json!({"inputs": {"prompt": "once", "seed": 1}});
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (base, body) = (base.clone(), body.clone());
            tokio::spawn(async move { post(&base, "txt2img", body, Some("key-1")).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap_or_else(|e| panic!("{e}"));
        match status {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::OK => {}
            other => panic!("{other}: {v}"),
        }
        ids.push(v["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(created, 1, "exactly one request made the run");
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(names(&d.jobs.join("inbox")), [format!("{}.json", ids[0])]);
    // A restarted server remembers the key.
    drop(serve1);
    let (_serve2, base) = serve(&d, &[]);
    let (status, v) = post(&base, "txt2img", body.clone(), Some("key-1")).await;
    assert_eq!(
        (status, v["id"].as_str()),
        (StatusCode::OK, Some(ids[0].as_str()))
    );
    let (status, v) = post(
        &base,
        "txt2img",
        json!({"inputs": {"prompt": "twice"}}),
        Some("key-1"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "idempotency_conflict");
    assert_eq!(names(&d.jobs.join("inbox")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_keeps_a_queued_run_from_ever_running_and_interrupts_a_running_one() {
    let d = dirs();
    let mut timing = Timing::default();
    timing.class_ms.insert("KSampler".into(), 4000);
    let sim = common::start_sim(&d.root.join("sim"), timing).await;
    let (_serve, base) = serve(&d, &[]);
    let _daemon = daemon(&d, &sim.url(), &["--pipeline", "1"]);
    let (_, a) = post(
        &base,
        "txt2img",
        json!({"inputs": {"prompt": "long"}}),
        None,
    )
    .await;
    let a = a["id"].as_str().unwrap_or_default().to_owned();
    let running = wait_for(&base, &a, Duration::from_secs(30), |s| s != "queued").await;
    assert_eq!(running["status"], "running", "{running}");
    // Node by node, from the daemon's status file: the sampler, with its steps.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get_run(&base, &a).await;
        if v["progress"]["class"] == "KSampler" {
            assert!(
                v["progress"]["max"].as_f64().is_some_and(|m| m > 0.0),
                "{v}"
            );
            assert!(v["phase"].is_string(), "{v}");
            assert!(
                v["progress"]["nodes_total"].as_u64().is_some_and(|n| n > 0),
                "{v}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no sampler progress: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, b) = post(
        &base,
        "txt2img",
        json!({"inputs": {"prompt": "never"}}),
        None,
    )
    .await;
    let b = b["id"].as_str().unwrap_or_default().to_owned();
    // Cancelled while it waits behind a: it never reaches ComfyUI.
    let resp = client()
        .delete(format!("{base}/v1/runs/{b}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), StatusCode::OK);
    let b_end = wait_for(&base, &b, Duration::from_secs(30), is_final).await;
    assert_eq!(b_end["status"], "cancelled", "{b_end}");
    // a, running, is interrupted.
    let resp = client()
        .delete(format!("{base}/v1/runs/{a}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), StatusCode::OK);
    let a_end = wait_for(&base, &a, Duration::from_secs(30), is_final).await;
    assert_eq!(a_end["status"], "cancelled", "{a_end}");
    let prefixes = sim.submitted_prefixes();
    let submitted = |id: &str| {
        prefixes
            .iter()
            .filter(|(_, p)| p.iter().any(|p| p.contains(id)))
            .count()
    };
    assert_eq!(submitted(&a), 1);
    assert_eq!(
        submitted(&b),
        0,
        "a cancelled queued run never ran: {prefixes:?}"
    );
    assert!(!d.outputs.join(&a).join("manifest.json").exists());
    // A final run stays as it is.
    let again = client()
        .delete(format!("{base}/v1/runs/{a}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, v) = json_of(again).await;
    assert_eq!(v["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_right_token_or_shape_are_refused_and_nothing_lands_elsewhere() {
    let d = dirs();
    let tokens = d.root.join("tokens.txt");
    std::fs::write(
        &tokens,
        "# tokens\nall-scopes-0123456789\nread-only-0123456789 read\nfor-nothing-01234567 none\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_serve, base) = serve(
        &d,
        &[
            "--tokens",
            tokens.to_str().unwrap_or_default(),
            "--max-body",
            "64KiB",
        ],
    );
    let before = tree(&d.root, &["jobs", "inputs", "outputs"]);
    let send = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut r = client().request(method, format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move { json_of(r.send().await.unwrap_or_else(|e| panic!("{e}"))).await }
    };
    let ok = json!({"inputs": {"prompt": "x"}});
    let (s, e) = send(reqwest::Method::GET, "/v1/workflows", None, None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = send(
        reqwest::Method::GET,
        "/v1/workflows",
        Some("not-a-token-at-all-00"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(
        reqwest::Method::GET,
        "/v1/workflows",
        Some("read-only-0123456789"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = send(
        reqwest::Method::POST,
        "/v1/workflows/txt2img/runs",
        Some("read-only-0123456789"),
        Some(ok.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, _) = send(
        reqwest::Method::GET,
        "/v1/workflows",
        Some("for-nothing-01234567"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let all = Some("all-scopes-0123456789");
    let (s, e) = send(
        reqwest::Method::POST,
        "/v1/workflows/nope/runs",
        all,
        Some(ok.clone()),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_workflow"))
    );
    let (s, _) = send(
        reqwest::Method::GET,
        "/v1/runs/0123456789abcdef0123",
        all,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = send(
        reqwest::Method::GET,
        "/v1/runs/..%2F..%2Fetc%2Fpasswd",
        all,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // One detail per bad input, each naming it.
    let (s, e) = send(
        reqwest::Method::POST,
        "/v1/workflows/txt2img/runs",
        all,
        Some(json!({"inputs": {"prompt": "", "steps": 500, "width": 100, "colour": "red"}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let mut named: Vec<&str> = e["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["input"].as_str())
        .collect();
    named.sort();
    assert_eq!(named, ["colour", "prompt", "steps", "width"], "{e}");
    // Seeds: above 2^53 - 1 refused with a message (a browser could not keep it exact); at the
    // limit kept exactly, to the job file.
    let (s, e) = send(
        reqwest::Method::POST,
        "/v1/workflows/txt2img/runs",
        all,
        Some(json!({"inputs": {"prompt": "x", "seed": 9007199254740993_u64}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["details"][0]["input"], "seed", "{e}");
    let (s, run) = send(
        reqwest::Method::POST,
        "/v1/workflows/txt2img/runs",
        all,
        Some(json!({"inputs": {"prompt": "x", "seed": 9007199254740991_u64}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    let job = std::fs::read_to_string(
        d.jobs
            .join("inbox")
            .join(format!("{}.json", run["id"].as_str().unwrap_or_default())),
    )
    .unwrap_or_default();
    assert!(job.contains("\"seed\":9007199254740991"), "{job}");
    // Too large, not JSON, not a run.
    let big = json!({"inputs": {"prompt": "x".repeat(100_000)}});
    let (s, e) = send(
        reqwest::Method::POST,
        "/v1/workflows/txt2img/runs",
        all,
        Some(big),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
    let resp = client()
        .post(format!("{base}/v1/workflows/txt2img/runs"))
        .bearer_auth("all-scopes-0123456789")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = client()
        .post(format!("{base}/v1/workflows/txt2img/runs"))
        .bearer_auth("all-scopes-0123456789")
        .body("prompt=x")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing was written for the refused ones: one run (the seed at the limit), and nothing
    // outside the job, input and output folders.
    assert_eq!(names(&d.jobs.join("inbox")).len(), 1);
    let (s, _) = send(
        reqwest::Method::POST,
        "/v1/workflows/txt2img/runs",
        all,
        Some(ok),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(tree(&d.root, &["jobs", "inputs", "outputs"]), before);
    // The page is public.
    let page = client()
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status(), StatusCode::OK);
    // Without tokens, only loopback is served.
    let out = Command::new(env!("CARGO_BIN_EXE_comfyd"))
        .args(["serve", "--listen", "0.0.0.0:0", "--jobs"])
        .arg(&d.jobs)
        .arg("--workflows")
        .arg(examples())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a loopback address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_is_posted_to_its_webhook_signed_and_retried() {
    use axum::http::HeaderMap;
    let d = dirs();
    let sim = common::start_sim(&d.root.join("sim"), Timing::default()).await;
    // The receiver: refuses the first delivery, takes the second.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, Vec<u8>)>();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (tx, calls) = (tx.clone(), calls.clone());
            async move {
                let _ = tx.send((headers, body.to_vec()));
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let hook_addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let secret_bytes = b"a webhook secret of 32 bytes...!";
    use base64::Engine;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret_bytes)
    );
    // Not in the folder the servers run in: the second one below must not find it.
    std::fs::create_dir_all(d.root.join("conf")).unwrap_or_else(|e| panic!("{e}"));
    let config = d.root.join("conf/comfyd.toml");
    std::fs::write(&config, format!("[serve]\nwebhook_secret = \"{secret}\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (_serve, base) = serve(&d, &["--config", config.to_str().unwrap_or_default()]);
    let _daemon = daemon(&d, &sim.url(), &[]);
    let (status, created) = post(
        &base,
        "txt2img",
        json!({"inputs": {"prompt": "hook"}, "webhook": format!("http://{hook_addr}/hook")}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let mut deliveries = Vec::new();
    for _ in 0..2 {
        let got = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook after {} deliveries", deliveries.len()));
        deliveries.push(got.unwrap_or_else(|| panic!("receiver closed")));
    }
    for (headers, body) in &deliveries {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (msg, ts, sig) = (
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
        );
        assert_eq!(msg, format!("msg_{id}"));
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret_bytes)
            .unwrap_or_else(|e| panic!("{e}"));
        mac.update(format!("{msg}.{ts}.").as_bytes());
        mac.update(body);
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(sig, want);
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        assert_eq!(
            (
                v["type"].as_str(),
                v["data"]["id"].as_str(),
                v["data"]["status"].as_str()
            ),
            (Some("run.finished"), Some(id.as_str()), Some("done"))
        );
    }
    // Delivered: no third call, and the server recorded how it ended.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .is_err()
    );
    let ended: Value = serde_json::from_slice(
        &std::fs::read(d.jobs.join("serve/hooks").join(format!("{id}.json"))).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(ended["outcome"], "delivered");
    // Without a secret, a webhook is refused up front.
    let (_plain, base2) = serve(&d, &[]);
    let (status, e) = post(
        &base2,
        "txt2img",
        json!({"inputs": {"prompt": "x"}, "webhook": "http://127.0.0.1:9/h"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_has_one_path_per_workflow_with_its_input_schema() {
    let d = dirs();
    let (_serve, base) = serve(&d, &[]);
    let (status, doc) = json_of(
        client()
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for name in ["txt2img", "img2img", "lora", "solid-color", "invert-image"] {
        let op = &doc["paths"][format!("/v1/workflows/{name}/runs")]["post"];
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        let validator = jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(validator.is_valid(&json!({"inputs": {}})) || name != "solid-color");
        assert!(
            !validator.is_valid(&json!({"inputs": {"no_such_input": 1}})),
            "{name}"
        );
    }
    let txt = &doc["paths"]["/v1/workflows/txt2img/runs"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    let v = jsonschema::validator_for(txt).unwrap_or_else(|e| panic!("{e}"));
    assert!(v.is_valid(&json!({"inputs": {"prompt": "x", "steps": 30}})));
    assert!(!v.is_valid(&json!({"inputs": {"prompt": "x", "steps": 300}})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_workflow_repository_is_served_as_edited() {
    let d = dirs();
    let repo = d.root.join("repo");
    common::copy_dir(&examples(), &repo);
    let (_serve, base) = serve_repo(&d, &repo, &[]);
    let title = || async {
        let (_, w) = json_of(
            client()
                .get(format!("{base}/v1/workflows/txt2img"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        w["title"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(title().await, "Text to image (SD 1.5)");
    let path = repo.join("workflows/txt2img.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(
        &path,
        text.replace("Text to image (SD 1.5)", "Text to image, edited"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while title().await != "Text to image, edited" {
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, doc) = json_of(
        client()
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(
        doc["paths"]["/v1/workflows/txt2img/runs"]["post"]["summary"],
        "Run Text to image, edited"
    );
}
