//! File helpers the daemon's writers share: atomic replacement, unique names, bounded reads,
//! free space.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Writes `path` so that readers see the old file or the whole new one: a temp file beside it
/// (a short name, so a long target name cannot make it too long), synced, then renamed over.
/// The temp file is removed when anything fails (a full disk leaves nothing behind).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, true)
}

/// Like [`write_atomic`] without the sync: for records whose loss in a power cut costs a
/// repeat, not a result (leases, job results, status files). A killed process loses nothing:
/// the page cache outlives it.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".t-{:016x}", fastrand::u64(..)));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `dir/NAME`, or `dir/STEM.N.EXT` when that exists: a file dropped twice is kept twice.
pub fn unique(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let first = dir.join(name);
    if !first.exists() {
        return Ok(first);
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    for n in 2..100_000 {
        let candidate = if ext.is_empty() {
            dir.join(format!("{stem}.{n}"))
        } else {
            dir.join(format!("{stem}.{n}.{ext}"))
        };
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(io::Error::other(format!(
        "too many files named like `{name}` in {}",
        dir.display()
    )))
}

/// Reads a regular file of at most `limit` bytes; symbolic links, FIFOs and devices are refused
/// without being opened for reading, and a file that grows past the limit while being read is
/// an error, not an allocation.
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Err(io::Error::other("job files may not be symbolic links"));
    }
    if !meta.is_file() {
        return Err(io::Error::other(
            "not a regular file (a FIFO, socket or device is never read)",
        ));
    }
    if meta.len() > limit {
        return Err(io::Error::other(format!(
            "the file is {} bytes, over the {limit}-byte limit",
            meta.len()
        )));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::other(format!(
            "the file grew past the {limit}-byte limit"
        )));
    }
    Ok(out)
}

/// Bytes available to this user on the file system holding `path`.
pub fn available_space(path: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Whether process `pid` exists on this machine.
pub fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_and_bounded_reads() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = t.path();
        assert_eq!(unique(d, "a.toml").ok(), Some(d.join("a.toml")));
        write_atomic(&d.join("a.toml"), b"x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unique(d, "a.toml").ok(), Some(d.join("a.2.toml")));
        assert_eq!(read_limited(&d.join("a.toml"), 1).ok(), Some(b"x".to_vec()));
        assert!(read_limited(&d.join("a.toml"), 0).is_err());
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0), 1);
        assert!(available_space(d).unwrap_or(0) > 0);
        assert!(pid_alive(std::process::id()));
    }
}
