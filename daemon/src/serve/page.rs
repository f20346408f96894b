//! The form page at `/` and its assets under `/assets/`, compiled into the binary from
//! `page/` (the bundle is committed; building comfyd needs no node). `web/` holds the page's
//! source; `scripts/page-check` rebuilds the bundle and fails when the committed copy differs.

/// A page file by its path under `/` (`index.html`, `assets/...`): bytes and media type.
pub fn file(path: &str) -> Option<(&'static [u8], &'static str)> {
    match path {
        "index.html" => Some((
            include_bytes!("page/index.html"),
            "text/html; charset=utf-8",
        )),
        "assets/app.js" => Some((
            include_bytes!("page/assets/app.js"),
            "text/javascript; charset=utf-8",
        )),
        "assets/app.css" => Some((
            include_bytes!("page/assets/app.css"),
            "text/css; charset=utf-8",
        )),
        "assets/licenses.txt" => Some((
            include_bytes!("page/assets/licenses.txt"),
            "text/plain; charset=utf-8",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::file;

    /// Every `/assets/...` file index.html loads is one `file` serves: a rebuilt bundle that
    /// named its files differently would otherwise give a blank page.
    #[test]
    fn index_html_loads_only_files_that_are_served() {
        let (html, media) = file("index.html").unwrap_or_else(|| panic!("no index.html"));
        assert!(media.starts_with("text/html"));
        let html = std::str::from_utf8(html).unwrap_or_else(|e| panic!("index.html: {e}"));
        let refs: Vec<&str> = html
            .split(['"', '\''])
            .filter_map(|s| s.strip_prefix('/'))
            .filter(|s| s.starts_with("assets/"))
            .collect();
        assert!(refs.contains(&"assets/app.js"), "{refs:?}");
        assert!(refs.contains(&"assets/app.css"), "{refs:?}");
        for r in refs {
            let (bytes, _) = file(r).unwrap_or_else(|| panic!("index.html loads /{r}, not served"));
            assert!(!bytes.is_empty(), "{r} is empty");
        }
        assert_eq!(
            file("assets/app.js").map(|f| f.1),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(file("assets/../index.html"), None);
    }
}
