//! `GET /view` and `POST /upload/image`, with ComfyUI's path checks: `..` or a leading `/` in
//! a file name is a 400, a subfolder leaving its folder a 403, a missing file a 404.

use std::path::Path;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{first, respond};
use crate::files::{inside, normalize};
use crate::image::{decode_png, encode_png};
use crate::multipart;
use crate::shared::Shared;

/// `mimetypes.guess_type`, for the types ComfyUI outputs; markup is served as a download.
fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "txt" => "text/plain",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "wav" => "audio/x-wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "glb" => "model/gltf-binary",
        _ => "application/octet-stream",
    }
}

pub(crate) async fn view(shared: &Shared, query: &[(String, String)]) -> Response {
    let Some(raw) = first(query, "filename") else {
        return respond::empty(StatusCode::NOT_FOUND);
    };
    let (name, annotated) = match shared.dirs.annotated(raw, Path::new("")) {
        (name, dir) if dir.as_os_str().is_empty() => (name, None),
        (name, dir) => (name, Some(dir.to_path_buf())),
    };
    if name.is_empty() {
        return respond::empty(StatusCode::BAD_REQUEST);
    }
    if name.starts_with('/') || name.contains("..") {
        return respond::empty(StatusCode::BAD_REQUEST);
    }
    let base = match annotated {
        Some(dir) => dir,
        None => match shared
            .dirs
            .by_type(first(query, "type").unwrap_or("output"))
        {
            Some(dir) => dir.to_path_buf(),
            None => return respond::empty(StatusCode::BAD_REQUEST),
        },
    };
    let dir = match first(query, "subfolder") {
        Some(sub) => match inside(&base, &base.join(sub)) {
            Some(dir) => dir,
            None => return respond::empty(StatusCode::FORBIDDEN),
        },
        None => base,
    };
    let name = name.rsplit('/').next().unwrap_or(name);
    let file = dir.join(name);
    if !file.is_file() {
        return respond::empty(StatusCode::NOT_FOUND);
    }
    let Ok(bytes) = tokio::fs::read(&file).await else {
        return respond::empty(StatusCode::NOT_FOUND);
    };
    // `preview=webp;90` is not simulated: the file is served as it is.
    match first(query, "channel").unwrap_or("rgba") {
        channel @ ("rgb" | "a") => {
            let Some(img) = decode_png(&bytes) else {
                return respond::internal_error();
            };
            let (channels, data): (usize, Vec<u8>) = if channel == "rgb" {
                (
                    3,
                    img.rgba
                        .chunks_exact(4)
                        .flat_map(|p| [p[0], p[1], p[2]])
                        .collect(),
                )
            } else {
                (
                    4,
                    img.rgba
                        .chunks_exact(4)
                        .flat_map(|p| [0, 0, 0, p[3]])
                        .collect(),
                )
            };
            match encode_png(img.width, img.height, channels, &data, &[]) {
                Ok(png) => respond::file("image/png", name, png),
                Err(_) => respond::internal_error(),
            }
        }
        _ => respond::file(content_type(name), name, bytes),
    }
}

/// `os.path.splitext` on a file name.
fn split_ext(name: &str) -> (&str, &str) {
    let start = name.len() - name.trim_start_matches('.').len();
    match name[start..].rfind('.') {
        Some(at) => name.split_at(start + at),
        None => (name, ""),
    }
}

pub(crate) async fn upload_image(shared: &Shared, content_type: &str, body: &[u8]) -> Response {
    let Some(parts) = multipart::parse(content_type, body) else {
        return respond::empty(StatusCode::BAD_REQUEST);
    };
    let field = |name: &str| parts.iter().find(|p| p.name == name);
    let kind = field("type").map(multipart::Part::text);
    let kind = kind.as_deref().unwrap_or("input");
    // Any other type leaves ComfyUI's `type_dir` unbound: a 500.
    let Some(upload_dir) = shared.dirs.by_type(kind) else {
        return respond::internal_error();
    };
    let Some(image) = field("image") else {
        return respond::empty(StatusCode::BAD_REQUEST);
    };
    let Some(mut filename) = image.filename.clone() else {
        return respond::internal_error();
    };
    if filename.is_empty() {
        return respond::empty(StatusCode::BAD_REQUEST);
    }
    let subfolder = field("subfolder")
        .map(multipart::Part::text)
        .unwrap_or_default();
    let folder = normalize(&upload_dir.join(&subfolder));
    if inside(upload_dir, &folder.join(&filename)).is_none() {
        return respond::empty(StatusCode::BAD_REQUEST);
    }
    if tokio::fs::create_dir_all(&folder).await.is_err() {
        return respond::internal_error();
    }
    let overwrite = field("overwrite").map(multipart::Part::text);
    let mut duplicate = false;
    if !matches!(overwrite.as_deref(), Some("true" | "1")) {
        let original = filename.clone();
        let (stem, ext) = split_ext(&original);
        let mut i = 1;
        while folder.join(&filename).exists() {
            if tokio::fs::read(folder.join(&filename))
                .await
                .is_ok_and(|b| b == image.data)
            {
                duplicate = true;
                break;
            }
            filename = format!("{stem} ({i}){ext}");
            i += 1;
        }
    }
    if !duplicate
        && tokio::fs::write(folder.join(&filename), &image.data)
            .await
            .is_err()
    {
        return respond::internal_error();
    }
    respond::ok_json(&json!({"name": filename, "subfolder": subfolder, "type": kind}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitext() {
        assert_eq!(split_ext("a.b.png"), ("a.b", ".png"));
        assert_eq!(split_ext(".hidden"), (".hidden", ""));
        assert_eq!(split_ext("noext"), ("noext", ""));
    }
}
