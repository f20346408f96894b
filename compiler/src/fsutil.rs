//! File-system helpers shared by the `comfyc` binary and the daemon: atomic writes and path
//! containment.
//!
//! The compiler proper never writes files (it reads through [`crate::source::Loader`]); these
//! are for the edges that do — `comfyc build`, `comfyc nodes pull`, and the daemon's outputs
//! and manifests — so that all of them follow one rule.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

/// Writes `path` so that a reader sees either the old file or the whole new one: the bytes go
/// to a hidden temp file beside it, are synced to disk, and the temp file is renamed over.
/// A failed write leaves no temp file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy();
    // The process id keeps two writers of the same file from sharing a temp file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `path` made relative and free of `.` and `..`, or `None` when it is absolute or climbs
/// out of its root. Purely lexical: symlinks are the caller's to resolve.
pub fn contained(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `root.join(path)` when `path` stays inside `root`, also after symlinks are resolved
/// (for paths that exist); `None` when it leaves.
pub fn join_inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = contained(path)?;
    let full = root.join(&rel);
    match (root.canonicalize(), full.canonicalize()) {
        (Ok(r), Ok(f)) if !f.starts_with(&r) => None,
        _ => Some(full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap_or_else(|e| panic!("{e}"));
        write_atomic(&p, b"two").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&p).unwrap_or_default(), "two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A folder that does not exist is an error, not a stray temp file.
        assert!(write_atomic(&dir.path().join("no/such/dir/x"), b"x").is_err());
    }

    #[test]
    fn containment_is_lexical_and_refuses_escapes() {
        assert_eq!(
            contained(Path::new("a/./b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(contained(Path::new("../x")), None);
        assert_eq!(contained(Path::new("a/../../x")), None);
        assert_eq!(contained(Path::new("/etc/passwd")), None);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(join_inside(dir.path(), Path::new("x/y")).is_some());
        assert!(join_inside(dir.path(), Path::new("../y")).is_none());
    }
}
