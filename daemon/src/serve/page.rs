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
