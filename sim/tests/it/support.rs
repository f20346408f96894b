//! What every test needs: the recorded contract folder, a simulator in a temp dir, an HTTP
//! client, a websocket client, and the comparisons (JSON shapes, frame-type sequences).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use comfy_sim::{Config, Sim};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The shared folder: `$COMFYC_SHARED`, or `shared/` beside the repository. Missing fixtures
/// fail the test: a contract that cannot be read must never pass silently.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("COMFYC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    assert!(
        dir.join("comfyui/object_info.json").is_file(),
        "the recorded ComfyUI contract is missing: expected `{}/comfyui/object_info.json`\n\
         help: set COMFYC_SHARED to the shared folder",
        dir.display()
    );
    dir
}

pub fn recorded_path(name: &str) -> PathBuf {
    shared_dir().join("comfyui").join(name)
}

/// A recorded JSON file.
pub fn recorded(name: &str) -> Value {
    let path = recorded_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The server frames of a recorded `.jsonl` transcript (the recorder's MARK lines dropped).
pub fn recorded_frames(name: &str) -> Vec<Frame> {
    let path = recorded_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter_map(|line| match line["frame"].as_str() {
            Some("text") => Some(Frame::Text(line["json"].clone())),
            Some("binary") => Some(Frame::RecordedBinary(line["binary"].clone())),
            _ => None,
        })
        .collect()
}

pub fn catalogue() -> Value {
    static CATALOGUE: OnceLock<Value> = OnceLock::new();
    CATALOGUE
        .get_or_init(|| recorded("object_info.json"))
        .clone()
}

pub struct TestSim {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub async fn start() -> TestSim {
    start_with(|_| {}).await
}

pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestSim {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::new(catalogue(), dir.path());
    configure(&mut config);
    let sim = comfy_sim::start(config)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    TestSim { sim, dir, http }
}

/// A response reduced to what the contract compares.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl TestSim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.url())
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub async fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        answer(resp).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let a = self.get(path).await;
        assert_eq!(a.status, 200, "GET {path}: {}", a.text());
        a.json()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body.to_string().into_bytes()))
            .await
    }

    /// Queues a prompt, expecting a 200; returns the prompt id.
    pub async fn queue(&self, prompt: &Value, client_id: &str) -> String {
        let a = self
            .post(
                "/prompt",
                &json!({"prompt": prompt, "client_id": client_id}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["prompt_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn upload(&self, name: &str, bytes: Vec<u8>, fields: &[(&str, &str)]) -> Answer {
        let mut form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
        );
        for (k, v) in fields {
            form = form.text((*k).to_owned(), (*v).to_owned());
        }
        let resp = self
            .http
            .post(self.url("/upload/image"))
            .multipart(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload: {e}"));
        answer(resp).await
    }

    /// Waits until the prompt's history entry is there, and returns it.
    pub async fn history_entry(&self, prompt_id: &str) -> Value {
        for _ in 0..400 {
            let h = self.get_json(&format!("/history/{prompt_id}")).await;
            if let Some(entry) = h.get(prompt_id) {
                return entry.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("prompt {prompt_id} never reached the history");
    }

    pub async fn ws(&self, client_id: Option<&str>) -> Ws {
        let base = self.sim.url().replace("http://", "ws://");
        let url = match client_id {
            Some(id) => format!("{base}/ws?clientId={id}"),
            None => format!("{base}/ws"),
        };
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("ws connect: {e}"));
        Ws { stream }
    }
}

pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("body: {e}"))
        .to_vec();
    Answer {
        status,
        content_type,
        headers,
        bytes,
    }
}

/// A websocket frame, received or recorded.
#[derive(Debug, Clone)]
pub enum Frame {
    Text(Value),
    Binary(Vec<u8>),
    /// A recorded binary frame: only its decoded header was kept.
    RecordedBinary(Value),
}

impl Frame {
    /// `status`, `executing`, ..., or `binary:PREVIEW_IMAGE` and the like.
    pub fn kind(&self) -> String {
        match self {
            Frame::Text(v) => v["type"].as_str().unwrap_or("?").to_owned(),
            Frame::Binary(b) => {
                let event = b
                    .get(..4)
                    .map_or(0, |e| u32::from_be_bytes([e[0], e[1], e[2], e[3]]));
                format!("binary:{}", binary_name(event))
            }
            Frame::RecordedBinary(v) => {
                format!("binary:{}", v["event_name"].as_str().unwrap_or("?"))
            }
        }
    }

    pub fn json(&self) -> &Value {
        match self {
            Frame::Text(v) => v,
            _ => &Value::Null,
        }
    }
}

fn binary_name(event: u32) -> &'static str {
    match event {
        1 => "PREVIEW_IMAGE",
        2 => "UNENCODED_PREVIEW_IMAGE",
        3 => "TEXT",
        4 => "PREVIEW_IMAGE_WITH_METADATA",
        _ => "?",
    }
}

pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    /// The next frame, or `None` when the socket closed; panics after 10 s of silence.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no websocket frame for 10 s"));
            match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(t))) => {
                    let v = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("frame not JSON: {e}"));
                    return Some(Frame::Text(v));
                }
                Some(Ok(Message::Binary(b))) => return Some(Frame::Binary(b.to_vec())),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn next_frame(&mut self) -> Frame {
        self.next()
            .await
            .unwrap_or_else(|| panic!("the websocket closed"))
    }

    pub async fn send_feature_flags(&mut self) {
        let msg = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true, "max_upload_size": 104857600}});
        self.stream
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Frames up to and including `executing` with `node: null` for this prompt.
    pub async fn until_done(&mut self, prompt_id: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self.next_frame().await;
            let done = f.kind() == "executing"
                && f.json()["data"]["node"].is_null()
                && f.json()["data"]["prompt_id"] == prompt_id;
            frames.push(f);
            if done {
                return frames;
            }
        }
    }

    /// Frames up to and including the first one `until` accepts.
    pub async fn until(&mut self, mut until: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self.next_frame().await;
            let stop = until(&f);
            frames.push(f);
            if stop {
                return frames;
            }
        }
    }
}

/// Frame kinds with consecutive `progress_state` frames collapsed into one.
pub fn kinds(frames: &[Frame]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in frames {
        let k = f.kind();
        if k == "progress_state" && out.last().is_some_and(|l| l == "progress_state") {
            continue;
        }
        out.push(k);
    }
    out
}

/// The kind of a JSON value, telling integers from floats.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Same keys recursively (in any order) and the same value kinds; arrays must be as long.
pub fn same_shape(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    let (ek, ak) = (kind_of(expected), kind_of(actual));
    if ek != ak {
        return Err(format!("{path}: expected {ek}, got {ak} ({actual})"));
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let mut ekeys: Vec<&String> = e.keys().collect();
            let mut akeys: Vec<&String> = a.keys().collect();
            ekeys.sort();
            akeys.sort();
            if ekeys != akeys {
                return Err(format!("{path}: keys {ekeys:?} != {akeys:?}"));
            }
            for (k, v) in e {
                same_shape(v, &a[k], &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: {} items expected, got {}: {actual}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                same_shape(ev, av, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

pub fn assert_shape(expected: &Value, actual: &Value) {
    if let Err(e) = same_shape(expected, actual, "$") {
        panic!("shape differs: {e}\nexpected: {expected}\nactual:   {actual}");
    }
}

/// Same kind sequence, and the same shape frame by frame (ids and times aside).
pub fn assert_frames_match(recorded: &[Frame], actual: &[Frame]) {
    let (rk, ak): (Vec<String>, Vec<String>) = (kinds(recorded), kinds(actual));
    assert_eq!(rk, ak, "frame order differs from the recording");
    let full: Vec<String> = recorded.iter().map(Frame::kind).collect();
    let got: Vec<String> = actual.iter().map(Frame::kind).collect();
    if full == got {
        for (i, (r, a)) in recorded.iter().zip(actual).enumerate() {
            if let (Frame::Text(r), Frame::Text(a)) = (r, a)
                && let Err(e) = same_shape(r, a, &format!("frame {i}"))
            {
                panic!(
                    "frame {i} ({}) differs: {e}\nrecorded: {r}\nactual:   {a}",
                    a["type"]
                );
            }
        }
    }
}

/// Decodes a PNG: width, height, RGB(A) bytes, channels, text chunk keywords.
pub fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>, usize, Vec<String>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("not a PNG: {e}"));
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("PNG frame: {e}"));
    buf.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    let text = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| t.keyword.clone())
        .collect();
    (info.width, info.height, buf, channels, text)
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

/// The three-node graph most tests run: EmptyImage → ImageInvert → SaveImage.
pub fn small_graph(color: u32, prefix: &str) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}
    })
}

/// EmptyImage followed by `blurs` ImageBlur nodes (10, 11, ...) and a PreviewAny of its size,
/// the shape of the recorded queue and interrupt prompts.
pub fn slow_graph(color: u32, blurs: usize) -> Value {
    let mut g = json!({"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": color}}});
    let mut prev = "1".to_owned();
    for i in 0..blurs {
        let id = (10 + i).to_string();
        g[&id] = json!({"class_type": "ImageBlur", "inputs": {"image": [prev, 0], "blur_radius": 31, "sigma": 5.0}});
        prev = id;
    }
    g["2"] = json!({"class_type": "GetImageSize", "inputs": {"image": [prev, 0]}});
    g["3"] = json!({"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}});
    g
}

/// An SD 1.5 text-to-image graph: CheckpointLoaderSimple (4) → KSampler (3) → VAEDecode (8) →
/// SaveImage (9), with two CLIPTextEncode (6, 7) and an EmptyLatentImage (5).
pub fn sd15(checkpoint: &str, seed: u64, steps: u64) -> Value {
    json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a white ceramic mug", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sd15"}}
    })
}
