//! Uploaded files, stored content-addressed under the inputs root: `uploads/SHA256.EXT`. The
//! client's file name is checked (no `..`, separators, absolute paths or NUL) and only its
//! extension is kept, so ComfyUI can tell the format; no client-chosen path is ever used.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The folder under the inputs root that uploads go to.
pub const DIR: &str = "uploads";

/// Checks a client's file name; the extension to keep (lowercase, `bin` when none).
pub fn extension(name: &str) -> Result<String, String> {
    if name.contains('\0') {
        return Err("the file name contains NUL".into());
    }
    if name.starts_with('/') || name.starts_with('\\') || name.get(1..3) == Some(":\\") {
        return Err(format!(
            "`{name}` is an absolute path: send a bare file name"
        ));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(format!("`{name}` has a path in it: send a bare file name"));
    }
    if name == ".." || name.contains("..") {
        return Err(format!("`{name}` contains `..`"));
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "bin".into());
    Ok(ext)
}

/// The stored name of `bytes`, relative to the inputs root.
pub fn stored_name(bytes: &[u8], ext: &str) -> String {
    format!("{DIR}/{}.{ext}", hex::encode(Sha256::digest(bytes)))
}

/// Stores `bytes` under the inputs root (once: the same bytes are one file); returns the
/// relative path a job names it by.
pub fn store(root: &Path, bytes: &[u8], ext: &str) -> io::Result<String> {
    let rel = stored_name(bytes, ext);
    let path = root.join(&rel);
    if path.is_file() {
        return Ok(rel);
    }
    std::fs::create_dir_all(root.join(DIR))?;
    crate::fsutil::write_atomic_unsynced(&path, bytes)?;
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_give_only_an_extension() {
        assert_eq!(extension("cat.PNG").as_deref(), Ok("png"));
        assert_eq!(extension("photo").as_deref(), Ok("bin"));
        assert_eq!(extension("a.tar.gz").as_deref(), Ok("gz"));
        assert_eq!(extension("x.p?g").as_deref(), Ok("bin"));
        for bad in [
            "../etc/passwd",
            "..",
            "a..png",
            "/etc/passwd",
            "\\\\server\\share.png",
            "C:\\x.png",
            "dir/cat.png",
            "cat\0.png",
        ] {
            assert!(extension(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_same_bytes_are_one_file() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = store(t.path(), b"abc", "png").unwrap_or_else(|e| panic!("{e}"));
        let b = store(t.path(), b"abc", "png").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert_eq!(
            a,
            "uploads/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png"
        );
        assert_eq!(std::fs::read(t.path().join(&a)).ok(), Some(b"abc".to_vec()));
        assert_eq!(
            std::fs::read_dir(t.path().join(DIR))
                .map(|r| r.count())
                .ok(),
            Some(1)
        );
    }
}
