//! Just enough `multipart/form-data` parsing for `POST /upload/image`: named fields, file names
//! and bytes. (axum's own multipart support is not among the crate's allowed features.)

/// One form field.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) data: Vec<u8>,
}

impl Part {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// The parts of a body, or `None` when it is not multipart or is malformed.
pub(crate) fn parse(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = param(params, "boundary")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(parts);
        }
        at = skip_line_end(body, at);
        let headers_end = find(body, b"\r\n\r\n", at)?;
        let headers = String::from_utf8_lossy(&body[at..headers_end]).into_owned();
        let data_start = headers_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let data_end = find(body, &closing, data_start)?;
        let disposition = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| v.to_owned())
            })
            .unwrap_or_default();
        if let Some(name) = param(&disposition, "name") {
            parts.push(Part {
                name,
                filename: param(&disposition, "filename"),
                data: body[data_start..data_end].to_vec(),
            });
        }
        at = data_end + closing.len();
    }
}

fn skip_line_end(body: &[u8], at: usize) -> usize {
    if body.get(at..at + 2) == Some(b"\r\n") {
        at + 2
    } else if body.get(at) == Some(&b'\n') {
        at + 1
    } else {
        at
    }
}

/// A `key=value` or `key="value"` parameter of a header value.
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case(key) {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.replace("\\\"", "\""))
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_files() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--XX\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--XX--\r\n";
        let parts = parse("multipart/form-data; boundary=XX", body).unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].filename.as_deref(), Some("a.png"));
        assert_eq!(parts[0].data, b"\x89PNG");
        assert_eq!(parts[1].text(), "true");
    }
}
