//! Source files as the compiler sees them.
//!
//! Every file a definition touches (the repo's `comfyc.toml`, definitions, graphs, templates,
//! the node catalogue) is read through one [`Loader`] seam and kept in a [`SourceMap`], so a
//! diagnostic produced long after parsing can still point at a byte range of the original text.
//! The compiler itself never opens a file: the binary hands it an [`FsLoader`], tests and the
//! daemon may hand it a [`MemLoader`].

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest file the filesystem loader reads. Workflow graphs with embedded images reach a few
/// megabytes; anything beyond this is almost certainly a mistake (or hostile).
pub const MAX_FILE_SIZE: u64 = 32 * 1024 * 1024;

/// Reads files of a workflow repository by repo-relative path.
pub trait Loader: Send + Sync {
    /// The whole text of the file at `path` (relative to the repository root).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Every file below `dir` (relative paths, recursively, sorted). A missing directory is
    /// an empty list.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// Reads from a directory on disk, refusing paths that leave it and files that are too big.
#[derive(Debug, Clone)]
pub struct FsLoader {
    root: PathBuf,
}

impl FsLoader {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Loader for FsLoader {
    fn read(&self, path: &Path) -> io::Result<String> {
        let rel = normalize(path).ok_or_else(|| escape_error(path))?;
        let full = self.root.join(&rel);
        // A symlink may point anywhere; resolve it and insist it stays inside the repo.
        let canonical_root = self.root.canonicalize()?;
        let canonical = full.canonicalize()?;
        if !canonical.starts_with(&canonical_root) {
            return Err(escape_error(path));
        }
        let meta = std::fs::metadata(&canonical)?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "file is {} bytes, over the {MAX_FILE_SIZE}-byte limit",
                    meta.len()
                ),
            ));
        }
        let bytes = std::fs::read(&canonical)?;
        String::from_utf8(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8: {e}")))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let rel = normalize(dir).ok_or_else(|| escape_error(dir))?;
        let mut out = Vec::new();
        let start = self.root.join(&rel);
        if !start.is_dir() {
            return Ok(out);
        }
        let mut stack = vec![rel];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(self.root.join(&d))? {
                let entry = entry?;
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = d.join(&name);
                let ty = entry.file_type()?;
                if ty.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// An in-memory repository, for tests and for callers that already hold the files.
#[derive(Debug, Clone, Default)]
pub struct MemLoader {
    files: BTreeMap<PathBuf, String>,
}

impl MemLoader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        self.insert(path, text);
        self
    }

    pub fn insert(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) {
        self.files.insert(path.into(), text.into());
    }
}

impl Loader for MemLoader {
    fn read(&self, path: &Path) -> io::Result<String> {
        let rel = normalize(path).ok_or_else(|| escape_error(path))?;
        self.files
            .get(&rel)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let rel = normalize(dir).ok_or_else(|| escape_error(dir))?;
        Ok(self
            .files
            .keys()
            .filter(|p| p.starts_with(&rel))
            .filter(|p| {
                !p.components()
                    .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
            })
            .cloned()
            .collect())
    }
}

fn escape_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("`{}` leaves the repository", path.display()),
    )
}

/// Resolves `.` and `..` lexically. `None` when the path is absolute or climbs above its
/// starting point, which a repo-relative path must never do.
pub fn normalize(path: &Path) -> Option<PathBuf> {
    crate::fsutil::contained(path)
}

/// Identifies one file of a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(u32);

/// One loaded file: its display name, its text and where its lines start.
#[derive(Debug)]
pub struct SourceFile {
    name: String,
    text: Arc<str>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 0-based line index and 0-based byte column of `offset` (clamped to the text).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(l) => l,
            Err(l) => l - 1,
        };
        (line, offset - self.line_starts[line])
    }

    /// The text of 0-based line `line`, without its line ending.
    pub fn line(&self, line: usize) -> &str {
        let start = self.line_starts[line];
        let end = self
            .line_starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// Number of characters (not bytes) between the start of the line and `offset`, so carets
    /// line up under non-ASCII text.
    pub fn char_col(&self, offset: usize) -> usize {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let (line, _) = self.line_col(offset);
        self.text[self.line_starts[line]..offset].chars().count()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All files a compilation looked at, addressed by [`FileId`].
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<Arc<str>>) -> FileId {
        let text: Arc<str> = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let id = FileId(self.files.len() as u32);
        self.files.push(SourceFile {
            name: name.into(),
            text,
            line_starts,
        });
        id
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// Clamps `span` to the file and to character boundaries, so that a span computed from
    /// another version of the text can never make a renderer panic.
    pub fn clamp(&self, id: FileId, span: Range<usize>) -> Range<usize> {
        let text = self.get(id).text();
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let end = floor_char_boundary(text, span.end.min(text.len())).max(start);
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(
            normalize(Path::new("a/./b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(normalize(Path::new("../x")), None);
        assert_eq!(normalize(Path::new("a/../../x")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn line_col_and_char_col() {
        let mut map = SourceMap::new();
        let id = map.add("f", "ab\nçd\n");
        let f = map.get(id);
        assert_eq!(f.line_col(0), (0, 0));
        assert_eq!(f.line_col(3), (1, 0));
        assert_eq!(f.line(1), "çd");
        assert_eq!(f.char_col(5), 1);
        assert_eq!(map.clamp(id, 4..100), 3..7);
    }

    #[test]
    fn mem_loader_lists_and_refuses_escape() {
        let l = MemLoader::new()
            .with("w/a.toml", "x")
            .with("w/.hidden", "y")
            .with("z", "");
        assert_eq!(
            l.list(Path::new("w")).unwrap_or_default(),
            vec![PathBuf::from("w/a.toml")]
        );
        assert!(l.read(Path::new("../z")).is_err());
    }
}
