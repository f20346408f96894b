//! What a node produces when it runs.
//!
//! A handful of classes are evaluated for real so images are real PNGs: EmptyImage, LoadImage,
//! ImageInvert, ImageScale(By) (nearest), SaveImage, PreviewImage, SaveImageWebsocket,
//! GetImageSize, PreviewAny, and the SD 1.5 text-to-image chain (EmptyLatentImage → KSampler →
//! VAEDecode gives a noise image of the latent's size). Every other class passes an input of
//! the same type through, or yields a placeholder of its declared output type.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::catalogue::Catalogue;
use crate::config::Protocol;
use crate::files::{Dirs, save_plan};
use crate::image::{Images, Masks, decode_png};
use crate::pyjson;

/// A value flowing along a link.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Image(Arc<Images>),
    Mask(Arc<Masks>),
    /// A latent batch, sized in pixels; `seed` makes decoded noise deterministic.
    Latent {
        width: usize,
        height: usize,
        batch: usize,
        seed: u64,
    },
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    /// Any other literal (lists, objects, null).
    Json(Value),
    /// A model, conditioning, ...: only its type and where it came from.
    Opaque {
        kind: String,
        label: String,
    },
}

impl Val {
    pub(crate) fn from_literal(v: &Value) -> Val {
        match v {
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                Val::Int(n.as_i64().unwrap_or(i64::MAX))
            }
            Value::Number(n) => Val::Float(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Val::Str(s.clone()),
            other => Val::Json(other.clone()),
        }
    }

    /// `format_value`: how `current_inputs` shows a value.
    pub(crate) fn formatted(&self) -> Value {
        match self {
            Val::Int(i) => json!(i),
            Val::Float(f) => json!(f),
            Val::Str(s) => json!(s),
            Val::Bool(b) => json!(b),
            Val::Json(Value::Null) => Value::Null,
            other => Value::String(other.text()),
        }
    }

    /// `str(value)`, or `json.dumps` where PreviewAny would use it.
    pub(crate) fn text(&self) -> String {
        match self {
            Val::Image(img) => img.describe(),
            Val::Mask(m) => format!(
                "tensor(shape=[{}, {}, {}], dtype=torch.float32)",
                m.frames.len(),
                m.height,
                m.width
            ),
            Val::Latent {
                width,
                height,
                batch,
                ..
            } => format!(
                "{{'samples': tensor(shape=[{batch}, 4, {}, {}], dtype=torch.float32)}}",
                height / 8,
                width / 8
            ),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => pyjson::float(*f),
            Val::Str(s) => s.clone(),
            Val::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Val::Json(v) => pyjson::dumps(v),
            Val::Opaque { kind, label } => format!("<{kind} from {label}>"),
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Float(f) => Some(*f as i64),
            Val::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn float(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// A node about to be evaluated.
pub(crate) struct Node<'a> {
    pub(crate) id: &'a str,
    pub(crate) class_type: &'a str,
    /// Resolved inputs, in the class's input order.
    pub(crate) inputs: &'a [(String, Val)],
    pub(crate) prompt: &'a Map<String, Value>,
    pub(crate) extra_data: &'a Map<String, Value>,
    pub(crate) dirs: &'a Dirs,
    pub(crate) catalogue: &'a Catalogue,
    /// `ComfyUI_temp_xxxxx`: PreviewImage's prefix, fixed per node object.
    pub(crate) preview_prefix: &'a str,
    pub(crate) protocol: Protocol,
}

/// Side effects a node sends on the websocket while it runs.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A progress step with a preview PNG (SaveImageWebsocket).
    Preview { png: Vec<u8>, step: u64, total: u64 },
    /// A `TEXT` binary frame (GetImageSize shows the size on the node).
    Text(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Produced {
    pub(crate) outputs: Vec<Val>,
    /// `{"images": [...]}`, `{"text": [...]}`: sent in `executed` and kept in history.
    pub(crate) ui: Option<Value>,
    pub(crate) events: Vec<Event>,
}

/// A Python exception raised by a node: what `execution_error` reports.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) exception_type: String,
    /// Already with ComfyUI's trailing `"\n"`.
    pub(crate) message: String,
    pub(crate) traceback: Vec<String>,
}

/// The frames every node error's traceback starts with (`execution.py`).
pub(crate) fn execute_traceback() -> Vec<String> {
    [
        "  File \"/opt/ComfyUI/execution.py\", line 496, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n                                                              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
        "  File \"/opt/ComfyUI/execution.py\", line 315, in get_output_data\n    return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, allow_interrupt=True, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n                    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
        "  File \"/opt/ComfyUI/execution.py\", line 289, in _async_map_node_over_list\n    await process_inputs(input_dict, i)\n",
        "  File \"/opt/ComfyUI/execution.py\", line 277, in process_inputs\n    result = f(**inputs)\n             ^^^^^^^^^^^\n",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn failure(exception_type: &str, message: String, frames: &[&str]) -> Failure {
    let mut traceback = execute_traceback();
    traceback.extend(frames.iter().map(|f| (*f).to_owned()));
    Failure {
        exception_type: exception_type.to_owned(),
        message: format!("{message}\n"),
        traceback,
    }
}

const TB_LOAD_IMAGE: &[&str] = &[
    "  File \"/opt/ComfyUI/nodes.py\", line 1647, in load_image\n    img = node_helpers.pillow(Image.open, image_path)\n          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    "  File \"/opt/ComfyUI/node_helpers.py\", line 31, in pillow\n    x = fn(arg)\n        ^^^^^^^\n",
    "  File \"/opt/venv/lib/python3.11/site-packages/PIL/Image.py\", line 3580, in open\n    raise UnidentifiedImageError(msg)\n",
];

const TB_SAVE_IMAGE: &[&str] = &[
    "  File \"/opt/ComfyUI/nodes.py\", line 1590, in save_images\n    full_output_folder, filename, counter, subfolder, filename_prefix = folder_paths.get_save_image_path(filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0])\n                                                                        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    "  File \"/opt/ComfyUI/folder_paths.py\", line 397, in get_save_image_path\n    raise Exception(err)\n",
];

impl Node<'_> {
    fn get(&self, name: &str) -> Option<&Val> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).and_then(Val::int).unwrap_or(default)
    }

    fn size(&self, name: &str, default: usize) -> usize {
        usize::try_from(self.int(name, default as i64)).unwrap_or(default)
    }

    fn text(&self, name: &str) -> String {
        self.get(name).map(Val::text).unwrap_or_default()
    }

    fn image(&self, name: &str) -> Option<Arc<Images>> {
        match self.get(name) {
            Some(Val::Image(img)) => Some(img.clone()),
            _ => None,
        }
    }

    fn first_image(&self) -> Option<Arc<Images>> {
        self.inputs.iter().find_map(|(_, v)| match v {
            Val::Image(img) => Some(img.clone()),
            _ => None,
        })
    }

    fn first_latent(&self) -> Option<Val> {
        self.inputs
            .iter()
            .find(|(_, v)| matches!(v, Val::Latent { .. }))
            .map(|(_, v)| v.clone())
    }

    /// The image input, or a black 64×64 one when a placeholder was linked in.
    fn image_or_blank(&self, name: &str) -> Arc<Images> {
        self.image(name)
            .or_else(|| self.first_image())
            .unwrap_or_else(|| Arc::new(Images::solid(64, 64, 1, 0)))
    }

    fn png_text(&self) -> Vec<(String, String)> {
        let mut text = vec![(
            "prompt".to_owned(),
            pyjson::dumps(&Value::Object(self.prompt.clone())),
        )];
        if let Some(Value::Object(extra)) = self.extra_data.get("extra_pnginfo") {
            text.extend(extra.iter().map(|(k, v)| (k.clone(), pyjson::dumps(v))));
        }
        text
    }

    /// SaveImage/PreviewImage: writes the batch, returns the `images` ui list.
    fn save(
        &self,
        images: &Images,
        prefix: &str,
        base: &std::path::Path,
        kind: &str,
    ) -> Result<Value, Failure> {
        let plan = save_plan(prefix, base, images.width, images.height)
            .map_err(|message| failure("Exception", message, TB_SAVE_IMAGE))?;
        std::fs::create_dir_all(&plan.folder).map_err(|e| os_error(&e))?;
        let text = self.png_text();
        let mut saved = Vec::new();
        for (batch, counter) in (0..images.frames.len()).zip(plan.counter..) {
            let stem = plan.filename.replace("%batch_num%", &batch.to_string());
            let file = format!("{stem}_{counter:05}_.png");
            let png = images
                .png(batch, &text)
                .map_err(|e| failure("OSError", e.to_string(), &[]))?;
            std::fs::write(plan.folder.join(&file), png).map_err(|e| os_error(&e))?;
            saved.push(json!({"filename": file, "subfolder": plan.subfolder, "type": kind}));
        }
        Ok(Value::Array(saved))
    }
}

impl Node<'_> {
    /// Core SaveVideo/SaveWEBM in 2026: one file, listed under `images` with
    /// `"animated": [true]` (NEWER.md; there is no `videos` key). The simulator encodes no
    /// video: the file holds a container signature and a note, not playable frames.
    fn save_video(&self) -> Result<Value, Failure> {
        let (ext, magic): (&str, &[u8]) = if self.class_type == "SaveWEBM" {
            ("webm", b"\x1a\x45\xdf\xa3")
        } else {
            ("mp4", b"\x00\x00\x00\x18ftypisom")
        };
        let (width, height) = self
            .first_image()
            .map_or((0, 0), |img| (img.width, img.height));
        let prefix = self.text("filename_prefix");
        let plan = save_plan(&prefix, &self.dirs.output, width, height)
            .map_err(|message| failure("Exception", message, &[]))?;
        std::fs::create_dir_all(&plan.folder).map_err(|e| os_error(&e))?;
        let file = format!("{}_{:05}_.{ext}", plan.filename, plan.counter);
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(b" comfy-sim placeholder video, not playable\n");
        std::fs::write(plan.folder.join(&file), bytes).map_err(|e| os_error(&e))?;
        Ok(json!({
            "images": [{"filename": file, "subfolder": plan.subfolder, "type": "output"}],
            "animated": [true],
        }))
    }
}

/// The entry naming a LoadImage file: `sub/name.png [output]` is `name.png` in `sub` of type
/// `output`; without an annotation the type is `input`.
fn input_entry(image: &str) -> Value {
    let (name, kind) = [" [output]", " [input]", " [temp]"]
        .iter()
        .find_map(|suffix| {
            image
                .strip_suffix(suffix)
                .map(|n| (n, suffix.trim_matches([' ', '[', ']'])))
        })
        .unwrap_or((image, "input"));
    let (subfolder, filename) = name.rsplit_once('/').unwrap_or(("", name));
    json!({"filename": filename, "subfolder": subfolder, "type": kind})
}

fn os_error(e: &std::io::Error) -> Failure {
    failure("OSError", e.to_string(), &[])
}

/// Runs one node.
pub(crate) fn evaluate(node: &Node<'_>) -> Result<Produced, Failure> {
    let mut out = Produced::default();
    match node.class_type {
        "EmptyImage" => {
            let img = Images::solid(
                node.size("width", 512),
                node.size("height", 512),
                node.size("batch_size", 1),
                node.int("color", 0),
            );
            out.outputs.push(Val::Image(Arc::new(img)));
        }
        "LoadImage" => {
            let (img, mask) = load_image(node)?;
            out.outputs = vec![Val::Image(Arc::new(img)), Val::Mask(Arc::new(mask))];
            if node.protocol == Protocol::Y2026 {
                // NEWER.md: entries may be of type `input`, without naming the nodes that list
                // them; in the simulator's 2026 mode LoadImage shows the file it loaded.
                out.ui = Some(json!({"images": [input_entry(&node.text("image"))]}));
            }
        }
        "ImageInvert" => {
            out.outputs
                .push(Val::Image(Arc::new(node.image_or_blank("image").invert())));
        }
        "ImageScale" => {
            let img = node.image_or_blank("image");
            let (w, h) = scaled_size(&img, node.size("width", 0), node.size("height", 0));
            let crop = node.text("crop") == "center";
            out.outputs
                .push(Val::Image(Arc::new(img.scale(w, h, crop))));
        }
        "ImageScaleBy" => {
            let img = node.image_or_blank("image");
            let by = node.get("scale_by").and_then(Val::float).unwrap_or(1.0);
            let w = ((img.width as f64 * by).round() as usize).max(1);
            let h = ((img.height as f64 * by).round() as usize).max(1);
            out.outputs
                .push(Val::Image(Arc::new(img.scale(w, h, false))));
        }
        "SaveImage" => {
            let img = node.image_or_blank("images");
            let prefix = node.text("filename_prefix");
            let saved = node.save(&img, &prefix, &node.dirs.output, "output")?;
            out.ui = Some(json!({"images": saved}));
        }
        "PreviewImage" => {
            let img = node.image_or_blank("images");
            let saved = node.save(&img, node.preview_prefix, &node.dirs.temp, "temp")?;
            out.ui = Some(json!({"images": saved}));
        }
        "SaveWEBM" | "SaveVideo" if node.protocol == Protocol::Y2026 => {
            out.ui = Some(node.save_video()?);
        }
        "SaveImageWebsocket" => {
            let img = node.image_or_blank("images");
            let total = img.frames.len() as u64;
            for (i, step) in (0..img.frames.len()).zip(0u64..) {
                let png = img
                    .png(i, &[])
                    .map_err(|e| failure("OSError", e.to_string(), &[]))?;
                out.events.push(Event::Preview { png, step, total });
            }
        }
        "GetImageSize" => {
            let img = node.image_or_blank("image");
            let batch = img.frames.len();
            out.events.push(Event::Text(format!(
                "width: {}, height: {}\n batch size: {batch}",
                img.width, img.height
            )));
            out.outputs = [img.width, img.height, batch]
                .map(|n| Val::Int(i64::try_from(n).unwrap_or(i64::MAX)))
                .to_vec();
        }
        "PreviewAny" => {
            let text = node
                .get("source")
                .map_or_else(|| "None".to_owned(), Val::text);
            out.ui = Some(json!({"text": [text]}));
        }
        "EmptyLatentImage" => out.outputs.push(Val::Latent {
            width: node.size("width", 512),
            height: node.size("height", 512),
            batch: node.size("batch_size", 1),
            seed: 0,
        }),
        "KSampler" | "KSamplerAdvanced" | "SamplerCustom" => {
            let seed = node.int("seed", node.int("noise_seed", 0));
            let latent = match node.first_latent() {
                Some(Val::Latent {
                    width,
                    height,
                    batch,
                    ..
                }) => (width, height, batch),
                _ => (512, 512, 1),
            };
            out.outputs.push(Val::Latent {
                width: latent.0,
                height: latent.1,
                batch: latent.2,
                seed: seed as u64,
            });
        }
        "VAEDecode" => {
            let img = match node.first_latent() {
                Some(latent) => decode(&latent),
                None => Images::solid(64, 64, 1, 0),
            };
            out.outputs.push(Val::Image(Arc::new(img)));
        }
        "VAEEncode" => {
            let img = node.image_or_blank("pixels");
            out.outputs.push(Val::Latent {
                width: img.width,
                height: img.height,
                batch: img.frames.len(),
                seed: 0,
            });
        }
        _ => {}
    }
    pad_outputs(node, &mut out.outputs);
    Ok(out)
}

/// ImageScale's size rule: a zero side keeps the aspect ratio.
fn scaled_size(img: &Images, width: usize, height: usize) -> (usize, usize) {
    match (width, height) {
        (0, 0) => (img.width, img.height),
        (0, h) => (
            ((img.width * h) as f64 / img.height.max(1) as f64)
                .round()
                .max(1.0) as usize,
            h,
        ),
        (w, 0) => (
            w,
            ((img.height * w) as f64 / img.width.max(1) as f64)
                .round()
                .max(1.0) as usize,
        ),
        (w, h) => (w, h),
    }
}

fn decode(latent: &Val) -> Images {
    match latent {
        Val::Latent {
            width,
            height,
            batch,
            seed,
        } => Images::noise(
            (width / 8).max(1) * 8,
            (height / 8).max(1) * 8,
            *batch,
            *seed,
        ),
        _ => Images::solid(64, 64, 1, 0),
    }
}

fn load_image(node: &Node<'_>) -> Result<(Images, Masks), Failure> {
    let name = node.text("image");
    let path = node
        .dirs
        .input_file(&name)
        .unwrap_or_else(|| node.dirs.input.join(&name));
    let bytes = std::fs::read(&path).map_err(|_| {
        failure(
            "FileNotFoundError",
            format!("[Errno 2] No such file or directory: '{}'", path.display()),
            &TB_LOAD_IMAGE[..1],
        )
    })?;
    let decoded = decode_png(&bytes).ok_or_else(|| {
        failure(
            "PIL.UnidentifiedImageError",
            format!("cannot identify image file '{}'", path.display()),
            TB_LOAD_IMAGE,
        )
    })?;
    Ok(decoded.to_image_and_mask())
}

/// Fills every declared output the evaluation did not produce.
fn pad_outputs(node: &Node<'_>, outputs: &mut Vec<Val>) {
    let declared = node.catalogue.outputs(node.class_type);
    for kind in declared.iter().skip(outputs.len()) {
        let kind = pyjson::str(kind);
        let same_kind_value = node.get("value").filter(|v| {
            matches!(
                (kind.as_str(), v),
                ("INT", Val::Int(_))
                    | ("FLOAT", Val::Float(_))
                    | ("STRING", Val::Str(_))
                    | ("BOOLEAN", Val::Bool(_))
            )
        });
        let val = match (kind.as_str(), same_kind_value) {
            (_, Some(v)) => v.clone(),
            ("IMAGE", _) => match (node.first_image(), node.first_latent()) {
                (Some(img), _) => Val::Image(img),
                (None, Some(latent)) => Val::Image(Arc::new(decode(&latent))),
                (None, None) => Val::Image(Arc::new(Images::solid(64, 64, 1, 0))),
            },
            ("MASK", _) => node
                .inputs
                .iter()
                .find(|(_, v)| matches!(v, Val::Mask(_)))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| Val::Mask(Arc::new(Masks::zeros(64, 64, 1)))),
            ("LATENT", _) => node.first_latent().unwrap_or(Val::Latent {
                width: 512,
                height: 512,
                batch: 1,
                seed: 0,
            }),
            ("INT", _) => Val::Int(0),
            ("FLOAT", _) => Val::Float(0.0),
            ("STRING", _) => Val::Str(String::new()),
            ("BOOLEAN", _) => Val::Bool(false),
            (other, _) => Val::Opaque {
                kind: other.to_owned(),
                label: format!("{} {}", node.class_type, node.id),
            },
        };
        outputs.push(val);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_image_name_becomes_an_entry_of_its_folder_and_type() {
        assert_eq!(
            input_entry("sub/in.png"),
            json!({"filename": "in.png", "subfolder": "sub", "type": "input"})
        );
        assert_eq!(
            input_entry("a.png [output]"),
            json!({"filename": "a.png", "subfolder": "", "type": "output"})
        );
        assert_eq!(input_entry("x/y/t.png [temp]")["subfolder"], "x/y");
    }
}
