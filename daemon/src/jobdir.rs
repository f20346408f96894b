//! The job directory: `inbox/`, `running/`, `done/`, `failed/`, and the moves between them.
//!
//! A job file is claimed by renaming it from `inbox/` into `running/`: the rename is atomic,
//! so when several daemons watch one directory exactly one of them gets each file. The owner
//! then writes `running/NAME.lease` and keeps it fresh; a lease older than its time-to-live
//! belongs to a daemon that died, and its job file may be taken over (again by an atomic
//! rename, of the lease). A job file ends in exactly one of `done/` or `failed/` (the failure
//! reason `NAME.error.json` written first), or back in `inbox/` on shutdown.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The folders of a job directory.
#[derive(Debug, Clone)]
pub struct JobDir {
    pub root: PathBuf,
}

/// Who holds a running job file, and since when it last said so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// `host/gpu-N`: a restarted daemon on the same GPU resumes its own jobs at once.
    pub owner: String,
    pub pid: u32,
    /// Seconds since the epoch.
    pub claimed: u64,
    pub renewed: u64,
}

/// Where a file is in the inbox scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    /// Ready to claim.
    Ready(PathBuf),
    /// Not for us: hidden, partial (`.tmp`, `.part`), not a job file extension, a directory.
    Ignored,
    /// Changed too recently: it may still be being written.
    Settling,
    /// A name no job file may have (too long, not UTF-8): refused without being read.
    BadName(PathBuf),
}

/// Longest job file name: room is left for `.lease` and `.error.json` beside it.
pub const MAX_NAME_BYTES: usize = 200;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JobDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }
    pub fn running(&self) -> PathBuf {
        self.root.join("running")
    }
    pub fn done(&self) -> PathBuf {
        self.root.join("done")
    }
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    pub fn status(&self) -> PathBuf {
        self.root.join("status")
    }

    /// Creates the folders.
    pub fn create(&self) -> io::Result<()> {
        for d in [
            self.inbox(),
            self.running(),
            self.done(),
            self.failed(),
            self.status(),
        ] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// Whether an inbox entry is a job file ready to claim. Files modified less than `settle`
    /// ago may still be growing (a writer that did not use write-then-rename).
    pub fn classify(path: &Path, settle: Duration) -> Candidate {
        let Some(os_name) = path.file_name() else {
            return Candidate::Ignored;
        };
        let Some(name) = os_name.to_str() else {
            return Candidate::BadName(path.to_path_buf());
        };
        if name.len() > MAX_NAME_BYTES && !name.starts_with('.') {
            return Candidate::BadName(path.to_path_buf());
        }
        let lower = name.to_ascii_lowercase();
        if name.starts_with('.')
            || lower.ends_with(".tmp")
            || lower.ends_with(".part")
            || lower.ends_with(".cancel")
        {
            return Candidate::Ignored;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Candidate::Ignored;
        };
        if meta.is_dir() {
            return Candidate::Ignored;
        }
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age < settle);
        if recent {
            Candidate::Settling
        } else {
            Candidate::Ready(path.to_path_buf())
        }
    }

    /// Inbox entries, sorted by name (files dropped together run in name order). Files with
    /// names no job file may have are moved to `failed/` under a safe name, with a report.
    pub fn scan_inbox(&self, settle: Duration) -> io::Result<(Vec<PathBuf>, bool)> {
        let mut ready = Vec::new();
        let mut settling = false;
        for entry in std::fs::read_dir(self.inbox())? {
            match Self::classify(&entry?.path(), settle) {
                Candidate::Ready(p) => ready.push(p),
                Candidate::Settling => settling = true,
                Candidate::Ignored => {}
                Candidate::BadName(p) => {
                    if let Err(e) = self.refuse_name(&p) {
                        tracing::warn!(error = %e, "could not refuse a badly named job file");
                    }
                }
            }
        }
        ready.sort();
        Ok((ready, settling))
    }

    /// Claims `inbox/NAME` by renaming it into `running/` and writing the lease. `Ok(None)`
    /// when another daemon was faster.
    pub fn claim(&self, inbox_file: &Path, owner: &str) -> io::Result<Option<PathBuf>> {
        let Some(name) = inbox_file.file_name() else {
            return Ok(None);
        };
        let dest = self.running().join(name);
        if dest.exists() {
            // A file of the same name is running; leave this one until it is done.
            return Ok(None);
        }
        match std::fs::rename(inbox_file, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let t = now_secs();
        self.write_lease(
            &dest,
            &Lease {
                owner: owner.to_owned(),
                pid: std::process::id(),
                claimed: t,
                renewed: t,
            },
        )?;
        Ok(Some(dest))
    }

    pub fn lease_path(running_file: &Path) -> PathBuf {
        let mut s = running_file.as_os_str().to_owned();
        s.push(".lease");
        PathBuf::from(s)
    }

    pub fn write_lease(&self, running_file: &Path, lease: &Lease) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(lease).map_err(io::Error::other)?;
        write_atomic(&Self::lease_path(running_file), &text)
    }

    pub fn read_lease(running_file: &Path) -> Option<Lease> {
        let text = std::fs::read(Self::lease_path(running_file)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Refreshes the lease of a file this daemon holds.
    pub fn renew(&self, running_file: &Path, owner: &str) -> io::Result<()> {
        let mut lease = Self::read_lease(running_file).unwrap_or(Lease {
            owner: owner.to_owned(),
            pid: std::process::id(),
            claimed: now_secs(),
            renewed: 0,
        });
        lease.owner = owner.to_owned();
        lease.pid = std::process::id();
        lease.renewed = now_secs();
        self.write_lease(running_file, &lease)
    }

    /// Running files this daemon may take over: its own (a restart of the same owner) or any
    /// whose lease is older than `ttl` (its daemon died). The takeover is an atomic rename of
    /// the lease, so two daemons cannot both take one file.
    pub fn reclaimable(&self, owner: &str, ttl: Duration) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.running())? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.ends_with(".lease") || name.contains(".lease.") || name.starts_with('.') {
                continue;
            }
            let lease = Self::read_lease(&path);
            let age = |secs: u64| Duration::from_secs(now_secs().saturating_sub(secs));
            let takeable = match &lease {
                Some(l) if l.owner == owner => l.pid != std::process::id(),
                Some(l) => age(l.renewed) > ttl,
                // Claimed, but the lease was never written: go by the file's age.
                None => std::fs::metadata(&path)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|a| a > ttl),
            };
            if !takeable {
                continue;
            }
            let lease_file = Self::lease_path(&path);
            if lease.is_some() {
                let grab = PathBuf::from(format!(
                    "{}.{}-{}",
                    lease_file.display(),
                    sanitize(owner),
                    std::process::id()
                ));
                match std::fs::rename(&lease_file, &grab) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&grab);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            self.renew(&path, owner)?;
            out.push(path);
        }
        out.sort();
        Ok(out)
    }

    /// Moves a file whose name cannot be used (too long, not UTF-8) straight to `failed/` as
    /// `refused-name-HASH`, with a report that says why and what it was called.
    pub fn refuse_name(&self, inbox_file: &Path) -> io::Result<PathBuf> {
        use sha2::Digest;
        let raw = inbox_file
            .file_name()
            .map(|n| n.as_encoded_bytes().to_vec())
            .unwrap_or_default();
        let hash = hex::encode(&sha2::Sha256::digest(&raw)[..6]);
        let dest = unique(&self.failed(), Path::new(&format!("refused-name-{hash}")))?;
        match std::fs::rename(inbox_file, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(dest),
            Err(e) => return Err(e),
        }
        let shown = String::from_utf8_lossy(&raw);
        let why = if std::str::from_utf8(&raw).is_err() {
            "the file name is not UTF-8".to_owned()
        } else {
            format!(
                "the file name is too long: {} bytes, where job file names are at most {MAX_NAME_BYTES}",
                raw.len()
            )
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let report = serde_json::json!({"file": shown, "error": format!("{why}: the file was not read; rename it and drop it again"), "jobs": 0});
        write_atomic(
            &self.failed().join(format!("{name}.error.json")),
            &serde_json::to_vec_pretty(&report).map_err(io::Error::other)?,
        )?;
        Ok(dest)
    }

    /// Moves a finished job file to `done/`.
    pub fn finish_done(&self, running_file: &Path) -> io::Result<PathBuf> {
        let dest = unique(&self.done(), running_file)?;
        std::fs::rename(running_file, &dest)?;
        let _ = std::fs::remove_file(Self::lease_path(running_file));
        Ok(dest)
    }

    /// Writes `failed/NAME.error.json`, then moves the job file to `failed/`.
    pub fn finish_failed(
        &self,
        running_file: &Path,
        error: &serde_json::Value,
    ) -> io::Result<PathBuf> {
        let dest = unique(&self.failed(), running_file)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = serde_json::to_vec_pretty(error).map_err(io::Error::other)?;
        write_atomic(&self.failed().join(format!("{name}.error.json")), &text)?;
        std::fs::rename(running_file, &dest)?;
        let _ = std::fs::remove_file(Self::lease_path(running_file));
        Ok(dest)
    }

    /// Puts a running job file back into `inbox/` (shutdown before it finished).
    pub fn hand_back(&self, running_file: &Path) -> io::Result<PathBuf> {
        let dest = unique(&self.inbox(), running_file)?;
        std::fs::rename(running_file, &dest)?;
        let _ = std::fs::remove_file(Self::lease_path(running_file));
        Ok(dest)
    }

    /// Files in each folder (job files only, not leases or error reports).
    pub fn counts(&self) -> [(String, usize); 4] {
        let count = |d: PathBuf| {
            std::fs::read_dir(d)
                .map(|r| {
                    r.filter_map(Result::ok)
                        .filter(|e| {
                            let n = e.file_name().to_string_lossy().into_owned();
                            !n.starts_with('.')
                                && !n.ends_with(".lease")
                                && !n.ends_with(".error.json")
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        [
            ("inbox".into(), count(self.inbox())),
            ("running".into(), count(self.running())),
            ("done".into(), count(self.done())),
            ("failed".into(), count(self.failed())),
        ]
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `dir/NAME`, or `dir/STEM.N.EXT` when that exists: a file dropped twice is kept twice.
fn unique(dir: &Path, file: &Path) -> io::Result<PathBuf> {
    let name = file
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?
        .to_string_lossy()
        .into_owned();
    let first = dir.join(&name);
    if !first.exists() {
        return Ok(first);
    }
    let (stem, ext) = name
        .rsplit_once('.')
        .map_or((name.as_str(), ""), |(s, e)| (s, e));
    for n in 2..10_000 {
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

/// Writes `path` so that readers see the old file or the whole new one: a temp file beside it,
/// synced, then renamed over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, true)
}

/// Like [`write_atomic`] without the sync: for files that only report (status files), where
/// losing the last version in a crash costs nothing.
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, JobDir) {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = JobDir::new(t.path());
        d.create().unwrap_or_else(|e| panic!("{e}"));
        (t, d)
    }

    #[test]
    fn a_file_is_claimed_once() {
        let (_t, d) = dir();
        let f = d.inbox().join("a.toml");
        std::fs::write(&f, "workflow = \"w\"").unwrap_or_else(|e| panic!("{e}"));
        let first = d.claim(&f, "h/gpu-0").unwrap_or_else(|e| panic!("{e}"));
        let second = d.claim(&f, "h/gpu-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, Some(d.running().join("a.toml")));
        assert_eq!(second, None);
        assert_eq!(
            JobDir::read_lease(&d.running().join("a.toml")).map(|l| l.owner),
            Some("h/gpu-0".into())
        );
    }

    #[test]
    fn inbox_scan_skips_hidden_partial_and_fresh_files() {
        let (_t, d) = dir();
        for n in [
            "a.toml",
            ".b.toml",
            "c.toml.tmp",
            "d.jsonl.part",
            "e.cancel",
        ] {
            std::fs::write(d.inbox().join(n), "x").unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::create_dir(d.inbox().join("sub")).unwrap_or_else(|e| panic!("{e}"));
        let (ready, settling) = d
            .scan_inbox(Duration::from_secs(3600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ready.is_empty() && settling,
            "a file just written is still settling"
        );
        let (ready, _) = d
            .scan_inbox(Duration::ZERO)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ready, [d.inbox().join("a.toml")]);
    }

    #[test]
    fn stale_leases_are_taken_over_and_fresh_ones_are_not() {
        let (_t, d) = dir();
        for n in ["old.toml", "fresh.toml"] {
            std::fs::write(d.inbox().join(n), "x").unwrap_or_else(|e| panic!("{e}"));
            d.claim(&d.inbox().join(n), "other/gpu-0")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let old = d.running().join("old.toml");
        let mut lease = JobDir::read_lease(&old).unwrap_or_else(|| panic!("lease"));
        lease.renewed -= 120;
        d.write_lease(&old, &lease)
            .unwrap_or_else(|e| panic!("{e}"));
        let got = d
            .reclaimable("me/gpu-1", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, std::slice::from_ref(&old));
        assert_eq!(
            JobDir::read_lease(&old).map(|l| l.owner),
            Some("me/gpu-1".into())
        );
        // Taken once only.
        assert!(
            d.reclaimable("third/gpu-2", Duration::from_secs(30))
                .unwrap_or_default()
                .is_empty()
        );
    }

    #[test]
    fn finishing_moves_the_file_and_keeps_duplicates() {
        let (_t, d) = dir();
        for _ in 0..2 {
            std::fs::write(d.inbox().join("j.toml"), "x").unwrap_or_else(|e| panic!("{e}"));
            let r = d
                .claim(&d.inbox().join("j.toml"), "o")
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_default();
            d.finish_failed(&r, &serde_json::json!({"reason": "x"}))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(d.failed().join("j.toml").exists() && d.failed().join("j.2.toml").exists());
        assert!(d.failed().join("j.2.toml.error.json").exists());
        assert_eq!(d.counts()[3].1, 2);
        assert_eq!(d.counts()[1].1, 0, "leases are gone with their files");
    }
}
