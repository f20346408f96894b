//! The job store: which jobs exist, who holds which, and what became of each.
//!
//! [`JobStore`] is the interface the daemon's owner loop works through: intake (a dropped file
//! becomes jobs), claim, renew, take over, record a prompt before submitting it, complete, and
//! finish a file. [`DirStore`] implements it over a directory that several daemons may share,
//! on one machine or over a network file system. A later store (a database shared by a fleet)
//! implements the same trait; the scheduler and the runner never see which one they use.
//!
//! The directory protocol (see ARCHITECTURE.md):
//! - `inbox/NAME` is taken in by one atomic rename to `queue/TOKEN=NAME` (TOKEN orders
//!   intake): one daemon wins. Jobs are *not* written out: a file's jobs are a pure function of
//!   its bytes ([`crate::job::parse`]), so expansion is idempotent and a daemon killed half-way
//!   loses and duplicates nothing.
//! - A taken-in file leaves that state by one more rename, so again one daemon wins: straight
//!   to `failed/` (its report written first) or `done/` when none of its jobs needs ComfyUI,
//!   or into a fresh folder `queue/F/NAME` (`F` = `TOKEN<more>~NAME`) as soon as a job needs a
//!   lease. A file whose jobs all fail at once never gets a folder.
//! - Job `i` of `F` is claimed by creating `queue/F/L<i>.1` with `link(2)` from a temp file
//!   that already holds the whole lease: the claim and its lease are one atomic step, and
//!   `link` fails if the name exists, so exactly one claimer wins.
//! - A lease names its owner, pid, generation, the owner's renewal time and, written before
//!   submitting, the prompt id and the ComfyUI it went to. Only the holder of generation `g`
//!   rewrites `L<i>.<g>`; takeover creates `L<i>.<g+1>` the same exclusive way. "Do I still hold
//!   it" is "does `L<i>.<g+1>` not exist": the generation is a fencing token.
//! - A lease is stale when its content has not changed for a TTL by the reader's own monotonic
//!   clock, or when its renewal time is more than two TTLs behind the reader's wall clock (clocks
//!   are assumed to agree within a TTL). Modification times are never read.
//! - A job's end is `queue/F/R<i>` (its outcome), written by whoever ran it. When every job of
//!   `F` has one, the finisher (the holder of the `Lend` lease, claimed like a job) writes the
//!   report, moves the file to `done/` or `failed/`, and removes `F`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, write_atomic_unsynced};

/// Longest job file name: its folder in `queue/` and its report in `failed/` must fit.
pub const MAX_NAME_BYTES: usize = 200;

/// A job file in the store: the name of its folder under `queue/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey(pub String);

impl FileKey {
    /// The name the file was dropped under.
    pub fn name(&self) -> &str {
        self.0.split_once('~').map_or(&self.0, |(_, n)| n)
    }
}

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job file taken in from the inbox that has no folder yet: `queue/TOKEN=NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TakenIn(pub String);

impl TakenIn {
    /// The name the file was dropped under.
    pub fn name(&self) -> &str {
        self.0.split_once('=').map_or(&self.0, |(_, n)| n)
    }
    fn token(&self) -> &str {
        self.0.split_once('=').map_or("", |(t, _)| t)
    }
}

impl std::fmt::Display for TakenIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `queue/` holds, in intake order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// Files with a folder (leases, results).
    pub files: Vec<FileKey>,
    /// Files taken in whose jobs were not looked at yet (or whose taker died meanwhile).
    pub taken: Vec<TakenIn>,
}

/// Which lease: a job of a file, or the right to finish the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Job(u32),
    End,
}

impl Slot {
    fn tag(self) -> String {
        match self {
            Slot::Job(i) => i.to_string(),
            Slot::End => "end".into(),
        }
    }
}

/// A lease as written in its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// `host/gpu-N`.
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub generation: u64,
    /// The holder's wall clock at its last renewal, in ms since the epoch.
    pub renewed_ms: u64,
    /// Set when the holder let go (shutdown): anyone may take it at once.
    #[serde(default)]
    pub released: bool,
    /// The prompt submitted for this job, recorded *before* it was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptRecord>,
}

/// A prompt id written ahead of its submission, and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// A canonical lowercase UUID.
    pub id: String,
    /// The ComfyUI it was (or was about to be) submitted to.
    pub url: String,
}

/// Proof of holding a slot: the fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Held {
    pub file: FileKey,
    pub slot: Slot,
    pub generation: u64,
}

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Ours now.
    Claimed(Held),
    /// Someone holds it (or held it): the newest lease and its generation.
    Held(Box<Lease>),
    /// It already has its result.
    Finished,
    /// The file is gone (finished and removed by another daemon).
    Gone,
}

/// How a job ended, as recorded in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub job: String,
    pub index: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<crate::report::JobFailure>,
    /// The daemon that recorded it.
    pub by: String,
}

/// What is in one file's folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileState {
    /// Newest lease generation per slot.
    pub leases: std::collections::BTreeMap<Slot, u64>,
    /// Jobs with a result.
    pub results: std::collections::BTreeSet<u32>,
    /// Whether the job file is still there (false once a finisher moved it out).
    pub has_file: bool,
}

/// The operations the daemon needs from a store of jobs shared by several daemons.
pub trait JobStore: Send + Sync {
    /// Creates what the store needs.
    fn create(&self) -> io::Result<()>;
    /// Takes `inbox/NAME` into the store, without a folder yet. `Ok(None)` when another daemon
    /// was faster.
    fn take(&self, inbox_file: &Path) -> io::Result<Option<TakenIn>>;
    /// A taken-in file's bytes (at most `limit` bytes are read; longer is an error).
    fn read_taken(&self, taken: &TakenIn, limit: u64) -> io::Result<Vec<u8>>;
    /// Gives a taken-in file its folder, so that its jobs can be claimed. `Ok(None)` when
    /// another daemon moved it first.
    fn open(&self, taken: &TakenIn) -> io::Result<Option<FileKey>>;
    /// Moves a taken-in file none of whose jobs needs ComfyUI to `done/` (no report) or
    /// `failed/` (report written first). `Ok(None)` when another daemon moved it first.
    fn finish_taken(&self, taken: &TakenIn, report: Option<&[u8]>) -> io::Result<Option<PathBuf>>;
    /// Takes `inbox/NAME` in and gives it its folder at once.
    fn intake(&self, inbox_file: &Path) -> io::Result<Option<FileKey>> {
        match self.take(inbox_file)? {
            Some(t) => self.open(&t),
            None => Ok(None),
        }
    }
    /// Everything in the store, in intake order.
    fn list(&self) -> io::Result<Listing>;
    /// Every file with a folder, in intake order.
    fn files(&self) -> io::Result<Vec<FileKey>> {
        Ok(self.list()?.files)
    }
    /// The job file's bytes (at most `limit` bytes are read; longer is an error).
    fn read(&self, file: &FileKey, limit: u64) -> io::Result<Vec<u8>>;
    /// Leases and results of one file.
    fn state(&self, file: &FileKey) -> io::Result<FileState>;
    /// Claims a slot nobody holds: the claim and its lease are one atomic step.
    fn claim(&self, file: &FileKey, slot: Slot, lease: &Lease) -> io::Result<Claim>;
    /// The newest lease of a slot.
    fn lease(&self, file: &FileKey, slot: Slot) -> io::Result<Option<Lease>>;
    /// The lease of one generation (an older one stays readable after a takeover).
    fn lease_at(&self, file: &FileKey, slot: Slot, generation: u64) -> io::Result<Option<Lease>>;
    /// Takes a stale slot over from generation `from`: `Ok(None)` when someone else did first.
    fn take_over(
        &self,
        file: &FileKey,
        slot: Slot,
        from: u64,
        lease: &Lease,
    ) -> io::Result<Option<Held>>;
    /// Rewrites the holder's lease (renewal, a prompt record, a release). Fails with
    /// [`lost`] when the slot was taken over.
    fn write_lease(&self, held: &Held, lease: &Lease) -> io::Result<()>;
    /// Whether `held` is still the newest generation: check before acting.
    fn still_held(&self, held: &Held) -> io::Result<bool>;
    /// Records a job's end.
    fn complete(&self, file: &FileKey, result: &JobResult) -> io::Result<()>;
    /// Every recorded result of a file.
    fn results(&self, file: &FileKey) -> io::Result<Vec<JobResult>>;
    /// Moves a finished file to `done/` (no report) or `failed/` (report written first), and
    /// removes its folder. The caller holds its `End` slot.
    fn finish(&self, held: &Held, report: Option<&[u8]>) -> io::Result<Option<PathBuf>>;
    /// Removes a file's folder whose job file is gone, when that is safe: nothing in it (a
    /// daemon died between making it and moving the file in) or finished (it has an `End`
    /// lease: the finisher died between moving the file out and removing the folder). True
    /// when it was removed.
    fn sweep(&self, file: &FileKey) -> io::Result<bool>;
}

/// The error [`JobStore::write_lease`] returns when the slot is no longer ours.
pub fn lost() -> io::Error {
    io::Error::other("the lease was taken over by another daemon")
}

/// Whether an error is a full file system.
pub fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

/// The job directory's store: `inbox/`, `queue/`, `done/`, `failed/`, `status/`.
#[derive(Debug, Clone)]
pub struct DirStore {
    pub root: PathBuf,
}

impl DirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }
    pub fn queue(&self) -> PathBuf {
        self.root.join("queue")
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
    fn folder(&self, file: &FileKey) -> PathBuf {
        self.queue().join(&file.0)
    }
    fn lease_path(&self, file: &FileKey, slot: Slot, generation: u64) -> PathBuf {
        self.folder(file)
            .join(format!("L{}.{generation}", slot.tag()))
    }
    fn result_path(&self, file: &FileKey, index: u32) -> PathBuf {
        self.folder(file).join(format!("R{index}"))
    }

    /// Creates `path` holding `bytes` only if nothing is there: written to a temp file first,
    /// then linked into place, so a reader never sees a partial lease and two writers cannot
    /// both succeed.
    fn create_exclusive(&self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".t-{:016x}", fastrand::u64(..)));
        std::fs::write(&tmp, bytes).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read_lease(&self, path: &Path) -> io::Result<Option<Lease>> {
        match std::fs::read(path) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The newest generation of a slot, probing upward from `from` (no directory listing).
    fn newest(&self, file: &FileKey, slot: Slot, from: u64) -> Option<u64> {
        let mut g = from.max(1);
        if !self.lease_path(file, slot, g).exists() {
            return None;
        }
        while self.lease_path(file, slot, g + 1).exists() {
            g += 1;
        }
        Some(g)
    }

    /// Moves an inbox file whose name cannot be used (too long, not UTF-8) straight to
    /// `failed/` as `refused-name-HASH`, with a report that says why and what it was called.
    pub fn refuse_name(&self, inbox_file: &Path) -> io::Result<PathBuf> {
        use sha2::Digest;
        let raw = inbox_file
            .file_name()
            .map(|n| n.as_encoded_bytes().to_vec())
            .unwrap_or_default();
        let hash = hex::encode(&sha2::Sha256::digest(&raw)[..6]);
        let dest = fsutil::unique(&self.failed(), &format!("refused-name-{hash}"))?;
        match std::fs::rename(inbox_file, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(dest),
            Err(e) => return Err(e),
        }
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
        let report = crate::report::FileReport {
            file: String::from_utf8_lossy(&raw).into_owned(),
            error: Some(format!(
                "{why}: the file was not read; rename it and drop it again"
            )),
            line: None,
            jobs: 0,
            done: 0,
            failed: 0,
            failures: Vec::new(),
            more: 0,
        };
        fsutil::write_atomic(
            &self.failed().join(format!("{name}.error.json")),
            &serde_json::to_vec_pretty(&report).map_err(io::Error::other)?,
        )?;
        Ok(dest)
    }

    /// The job file inside its folder (absent once finished).
    fn job_file(&self, file: &FileKey) -> PathBuf {
        self.folder(file).join(file.name())
    }

    fn taken_path(&self, taken: &TakenIn) -> PathBuf {
        self.queue().join(&taken.0)
    }

    /// Moves a job file out of the queue to `done/` (no report) or `failed/` (its report
    /// written first), under a name no file there has. `Ok(None)` when `src` was gone: another
    /// daemon moved it first, and the report written here is taken back unless that daemon's
    /// move put a file under the very name (it then wrote the same report).
    fn move_out(
        &self,
        src: &Path,
        name: &str,
        report: Option<&[u8]>,
    ) -> io::Result<Option<PathBuf>> {
        let dest_dir = if report.is_some() {
            self.failed()
        } else {
            self.done()
        };
        let dest = fsutil::unique(&dest_dir, name)?;
        let report_path = match report {
            Some(report) => {
                let file = dest
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let path = dest_dir.join(format!("{file}.error.json"));
                // Written before the file moves; not fsynced (a killed process loses nothing,
                // and this keeps a 100,000-file inbox of failing jobs fast).
                fsutil::write_atomic_unsynced(&path, report)?;
                Some(path)
            }
            None => None,
        };
        match std::fs::rename(src, &dest) {
            Ok(()) => Ok(Some(dest)),
            Err(e) => {
                if let Some(path) = report_path
                    && std::fs::symlink_metadata(&dest).is_err()
                {
                    let _ = std::fs::remove_file(path);
                }
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// What a name in `queue/` is: `TOKEN~NAME` a folder, `TOKEN=NAME` a file taken in (TOKEN is
/// hex, so the first other character tells).
fn classify(name: &str) -> Option<char> {
    let sep = name.trim_start_matches(|c: char| c.is_ascii_hexdigit());
    let c = sep.chars().next()?;
    (sep.len() < name.len() && (c == '~' || c == '=')).then_some(c)
}

impl JobStore for DirStore {
    fn create(&self) -> io::Result<()> {
        for d in [
            self.inbox(),
            self.queue(),
            self.done(),
            self.failed(),
            self.status(),
        ] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    fn take(&self, inbox_file: &Path) -> io::Result<Option<TakenIn>> {
        let Some(name) = inbox_file.file_name().and_then(|n| n.to_str()) else {
            return Ok(None);
        };
        let taken = TakenIn(format!(
            "{:012x}{:04x}={name}",
            crate::runner::now_ms(),
            fastrand::u16(..)
        ));
        match std::fs::rename(inbox_file, self.taken_path(&taken)) {
            Ok(()) => Ok(Some(taken)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_taken(&self, taken: &TakenIn, limit: u64) -> io::Result<Vec<u8>> {
        fsutil::read_limited(&self.taken_path(taken), limit)
    }

    fn open(&self, taken: &TakenIn) -> io::Result<Option<FileKey>> {
        // A fresh folder of its own (the token extended, so intake order holds): a daemon that
        // loses the race below removes only what it made.
        let key = FileKey(format!(
            "{}{:04x}~{}",
            taken.token(),
            fastrand::u16(..),
            taken.name()
        ));
        let folder = self.folder(&key);
        std::fs::create_dir(&folder)?;
        match std::fs::rename(self.taken_path(taken), folder.join(taken.name())) {
            Ok(()) => Ok(Some(key)),
            Err(e) => {
                let _ = std::fs::remove_dir(&folder);
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn finish_taken(&self, taken: &TakenIn, report: Option<&[u8]>) -> io::Result<Option<PathBuf>> {
        self.move_out(&self.taken_path(taken), taken.name(), report)
    }

    fn list(&self) -> io::Result<Listing> {
        let mut out = Listing::default();
        for e in std::fs::read_dir(self.queue())?.filter_map(Result::ok) {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with(".gone-") {
                // A finished folder whose removal was interrupted.
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            match classify(&name) {
                Some('~') => out.files.push(FileKey(name)),
                Some('=') => out.taken.push(TakenIn(name)),
                _ => {}
            }
        }
        out.files.sort();
        out.taken.sort();
        Ok(out)
    }

    fn read(&self, file: &FileKey, limit: u64) -> io::Result<Vec<u8>> {
        fsutil::read_limited(&self.job_file(file), limit)
    }

    fn state(&self, file: &FileKey) -> io::Result<FileState> {
        let mut s = FileState::default();
        for e in std::fs::read_dir(self.folder(file))? {
            let name = e?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == file.name() {
                s.has_file = true;
            } else if let Some(rest) = name.strip_prefix('R') {
                if let Ok(i) = rest.parse() {
                    s.results.insert(i);
                }
            } else if let Some(rest) = name.strip_prefix('L')
                && let Some((tag, g)) = rest.split_once('.')
                && let Ok(g) = g.parse::<u64>()
            {
                let slot = if tag == "end" {
                    Slot::End
                } else if let Ok(i) = tag.parse() {
                    Slot::Job(i)
                } else {
                    continue;
                };
                let e = s.leases.entry(slot).or_insert(g);
                *e = (*e).max(g);
            }
        }
        Ok(s)
    }

    fn claim(&self, file: &FileKey, slot: Slot, lease: &Lease) -> io::Result<Claim> {
        // A folder that is gone makes the result check miss and the link fail: `Gone` below.
        if let Slot::Job(i) = slot
            && self.result_path(file, i).exists()
        {
            return Ok(Claim::Finished);
        }
        let mut lease = lease.clone();
        lease.generation = 1;
        let bytes = serde_json::to_vec(&lease).map_err(io::Error::other)?;
        match self.create_exclusive(&self.lease_path(file, slot, 1), &bytes) {
            Ok(true) => Ok(Claim::Claimed(Held {
                file: file.clone(),
                slot,
                generation: 1,
            })),
            Ok(false) => match self.lease(file, slot)? {
                Some(l) => Ok(Claim::Held(Box::new(l))),
                None => Ok(Claim::Gone),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Claim::Gone),
            Err(e) => Err(e),
        }
    }

    fn lease(&self, file: &FileKey, slot: Slot) -> io::Result<Option<Lease>> {
        let Some(g) = self.newest(file, slot, 1) else {
            return Ok(None);
        };
        Ok(self
            .read_lease(&self.lease_path(file, slot, g))?
            .map(|mut l| {
                // The name is the truth; content written by a confused writer cannot lie about it.
                l.generation = g;
                l
            }))
    }

    fn lease_at(&self, file: &FileKey, slot: Slot, generation: u64) -> io::Result<Option<Lease>> {
        self.read_lease(&self.lease_path(file, slot, generation))
    }

    fn take_over(
        &self,
        file: &FileKey,
        slot: Slot,
        from: u64,
        lease: &Lease,
    ) -> io::Result<Option<Held>> {
        let mut lease = lease.clone();
        lease.generation = from + 1;
        let bytes = serde_json::to_vec(&lease).map_err(io::Error::other)?;
        match self.create_exclusive(&self.lease_path(file, slot, from + 1), &bytes) {
            Ok(true) => Ok(Some(Held {
                file: file.clone(),
                slot,
                generation: from + 1,
            })),
            Ok(false) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_lease(&self, held: &Held, lease: &Lease) -> io::Result<()> {
        if !self.still_held(held)? {
            return Err(lost());
        }
        let mut lease = lease.clone();
        lease.generation = held.generation;
        let bytes = serde_json::to_vec(&lease).map_err(io::Error::other)?;
        write_atomic_unsynced(
            &self.lease_path(&held.file, held.slot, held.generation),
            &bytes,
        )
    }

    fn still_held(&self, held: &Held) -> io::Result<bool> {
        let next = self.lease_path(&held.file, held.slot, held.generation + 1);
        let mine = self.lease_path(&held.file, held.slot, held.generation);
        let exists = |p: &Path| match std::fs::symlink_metadata(p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        };
        Ok(!exists(&next)? && exists(&mine)?)
    }

    fn complete(&self, file: &FileKey, result: &JobResult) -> io::Result<()> {
        let bytes = serde_json::to_vec(result).map_err(io::Error::other)?;
        write_atomic_unsynced(&self.result_path(file, result.index), &bytes)
    }

    fn results(&self, file: &FileKey) -> io::Result<Vec<JobResult>> {
        let mut out = Vec::new();
        for i in self.state(file)?.results {
            match std::fs::read(self.result_path(file, i)) {
                Ok(b) => {
                    if let Ok(r) = serde_json::from_slice::<JobResult>(&b) {
                        out.push(r);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|r| r.index);
        Ok(out)
    }

    fn finish(&self, held: &Held, report: Option<&[u8]>) -> io::Result<Option<PathBuf>> {
        if !self.still_held(held)? {
            return Ok(None);
        }
        let file = &held.file;
        let moved = self.move_out(&self.job_file(file), file.name(), report)?;
        // The folder leaves the queue in one rename before anything in it is deleted, so no
        // reader ever sees a file whose results are half gone.
        let tomb = self.queue().join(format!(".gone-{}", file.0));
        match std::fs::rename(self.folder(file), &tomb) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&tomb);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(moved)
    }

    fn sweep(&self, file: &FileKey) -> io::Result<bool> {
        let state = match self.state(file) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if state.has_file {
            return Ok(false);
        }
        if state.leases.is_empty() && state.results.is_empty() {
            // Fails when something arrived meanwhile: only an empty folder goes.
            return Ok(std::fs::remove_dir(self.folder(file)).is_ok());
        }
        if !state.leases.contains_key(&Slot::End) {
            return Ok(false);
        }
        let tomb = self.queue().join(format!(".gone-{}", file.0));
        match std::fs::rename(self.folder(file), &tomb) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&tomb);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether a lease is stale, by what the reader knows: the content it saw and since when (its
/// own monotonic clock), and its wall clock against the holder's renewal time.
pub fn is_stale(
    lease: &Lease,
    unchanged_for: std::time::Duration,
    now_ms: u64,
    ttl: std::time::Duration,
) -> bool {
    let ttl_ms = ttl.as_millis() as u64;
    lease.released
        || unchanged_for >= ttl
        || now_ms.saturating_sub(lease.renewed_ms) > ttl_ms.saturating_mul(2)
}

/// Whether a lease is this daemon's own from before a restart: same owner and host, and its
/// process is gone, so it may be taken back at once rather than after a TTL.
pub fn is_own_orphan(lease: &Lease, owner: &str, host: &str, alive: impl Fn(u32) -> bool) -> bool {
    lease.owner == owner
        && lease.host == host
        && lease.pid != std::process::id()
        && !alive(lease.pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lease(owner: &str) -> Lease {
        Lease {
            owner: owner.into(),
            host: "h".into(),
            pid: 1,
            generation: 0,
            renewed_ms: 1_000_000,
            released: false,
            prompt: None,
        }
    }

    fn store() -> (tempfile::TempDir, DirStore, FileKey) {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = DirStore::new(t.path());
        s.create().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(s.inbox().join("a.jsonl"), "x\n").unwrap_or_else(|e| panic!("{e}"));
        let k = s
            .intake(&s.inbox().join("a.jsonl"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not taken"));
        (t, s, k)
    }

    #[test]
    fn intake_happens_once() {
        let (_t, s, k) = store();
        assert_eq!(k.name(), "a.jsonl");
        assert_eq!(s.files().unwrap_or_default(), vec![k.clone()]);
        // The second daemon finds nothing to take.
        assert_eq!(s.intake(&s.inbox().join("a.jsonl")).ok().flatten(), None);
        assert_eq!(s.files().unwrap_or_default().len(), 1);
    }

    fn taken(s: &DirStore, name: &str) -> TakenIn {
        std::fs::write(s.inbox().join(name), "x\n").unwrap_or_else(|e| panic!("{e}"));
        s.take(&s.inbox().join(name))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not taken"))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|r| {
                r.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn a_file_failed_at_intake_needs_one_report_and_one_rename() {
        let (_t, s, _) = store();
        let t = taken(&s, "bad~x=y.json");
        assert_eq!(t.name(), "bad~x=y.json");
        // Taken in without a folder, told apart from folders by the character after the token.
        let l = s.list().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((l.files.len(), l.taken), (1, vec![t.clone()]));
        // A second daemon finds nothing to take.
        assert_eq!(s.take(&s.inbox().join("bad~x=y.json")).ok().flatten(), None);
        let moved = s
            .finish_taken(&t, Some(b"{}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(moved, Some(s.failed().join("bad~x=y.json")));
        assert_eq!(
            names(&s.failed()),
            ["bad~x=y.json", "bad~x=y.json.error.json"]
        );
        // A daemon that settled it too and lost the rename leaves the winner's report alone.
        assert_eq!(s.finish_taken(&t, Some(b"{}")).ok().flatten(), None);
        assert_eq!(names(&s.failed()).len(), 2);
        assert!(s.list().is_ok_and(|l| l.taken.is_empty()));
    }

    #[test]
    fn of_two_daemons_settling_one_taken_file_one_rename_wins() {
        let (_t, s, _) = store();
        let t = taken(&s, "b.json");
        // One daemon gives it a folder; the other decided it fails and loses the rename: its
        // report is taken back, and the file is only in its folder.
        let key = s
            .open(&t)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not opened"));
        assert_eq!(key.name(), "b.json");
        assert!(key.0.starts_with(t.token()), "intake order holds");
        assert_eq!(s.finish_taken(&t, Some(b"{}")).ok().flatten(), None);
        assert!(names(&s.failed()).is_empty(), "{:?}", names(&s.failed()));
        // A third opening it too makes no second folder.
        assert_eq!(s.open(&t).ok().flatten(), None);
        let l = s.list().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.files.iter().filter(|k| k.name() == "b.json").count(), 1);
        assert!(l.taken.is_empty());
        assert!(s.state(&key).is_ok_and(|st| st.has_file));
        // The other way round: settled first, so nobody can open it.
        let t = taken(&s, "c.json");
        assert_eq!(
            s.finish_taken(&t, None).ok().flatten(),
            Some(s.done().join("c.json"))
        );
        assert_eq!(s.open(&t).ok().flatten(), None);
        assert_eq!(s.list().map(|l| l.files.len()).ok(), Some(2));
    }

    #[test]
    fn left_over_folders_are_swept_and_live_ones_kept() {
        let (_t, s, k) = store();
        assert_eq!(s.sweep(&k).ok(), Some(false), "it has its file");
        // Made by a daemon killed before it moved the file in.
        let empty = FileKey("0123456789abcdef0000~e.json".into());
        std::fs::create_dir(s.queue().join(&empty.0)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.sweep(&empty).ok(), Some(true));
        // Finished by a daemon killed before it removed the folder.
        let end = match s.claim(&k, Slot::End, &lease("a")) {
            Ok(Claim::Claimed(h)) => h,
            other => panic!("{other:?}"),
        };
        std::fs::rename(s.job_file(&k), s.done().join("a.jsonl")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.sweep(&k).ok(), Some(true));
        assert!(s.list().is_ok_and(|l| l.files.is_empty()));
        // Its finisher, woken, finds nothing left to do.
        assert_eq!(s.finish(&end, None).ok().flatten(), None);
        // Leases without the file and without an end: not ours to judge.
        let (_t2, s2, k2) = store();
        assert!(matches!(
            s2.claim(&k2, Slot::Job(0), &lease("a")),
            Ok(Claim::Claimed(_))
        ));
        std::fs::remove_file(s2.job_file(&k2)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s2.sweep(&k2).ok(), Some(false));
    }

    #[test]
    fn one_claim_wins_and_takeover_fences_the_old_holder() {
        let (_t, s, k) = store();
        let a = match s.claim(&k, Slot::Job(0), &lease("a")) {
            Ok(Claim::Claimed(h)) => h,
            other => panic!("{other:?}"),
        };
        match s.claim(&k, Slot::Job(0), &lease("b")) {
            Ok(Claim::Held(l)) => assert_eq!((l.owner.as_str(), l.generation), ("a", 1)),
            other => panic!("{other:?}"),
        }
        let mut with_prompt = lease("a");
        with_prompt.prompt = Some(PromptRecord {
            id: "p".into(),
            url: "u".into(),
        });
        s.write_lease(&a, &with_prompt)
            .unwrap_or_else(|e| panic!("{e}"));
        // b takes it over; only one of two takers wins.
        let b = s
            .take_over(&k, Slot::Job(0), 1, &lease("b"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(b.is_some());
        assert_eq!(
            s.take_over(&k, Slot::Job(0), 1, &lease("c")).ok().flatten(),
            None
        );
        assert!(!s.still_held(&a).unwrap_or(true));
        assert!(s.write_lease(&a, &lease("a")).is_err(), "a is fenced off");
        let newest = s.lease(&k, Slot::Job(0)).ok().flatten();
        assert_eq!(
            newest.map(|l| (l.owner, l.generation)),
            Some(("b".into(), 2))
        );
        // The old generation still tells the taker which prompt was submitted.
        let old = s
            .read_lease(&s.lease_path(&k, Slot::Job(0), 1))
            .ok()
            .flatten();
        assert_eq!(old.and_then(|l| l.prompt).map(|p| p.id), Some("p".into()));
    }

    #[test]
    fn results_end_claims_and_finishing_removes_the_folder() {
        let (_t, s, k) = store();
        let r = JobResult {
            job: "a-00001".into(),
            index: 0,
            ok: true,
            failure: None,
            by: "a".into(),
        };
        s.complete(&k, &r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.claim(&k, Slot::Job(0), &lease("a")).ok(),
            Some(Claim::Finished)
        );
        let st = s.state(&k).unwrap_or_else(|e| panic!("{e}"));
        assert!(st.has_file && st.results.contains(&0));
        let end = match s.claim(&k, Slot::End, &lease("a")) {
            Ok(Claim::Claimed(h)) => h,
            other => panic!("{other:?}"),
        };
        let moved = s.finish(&end, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(moved, Some(s.done().join("a.jsonl")));
        assert!(s.files().unwrap_or_default().is_empty());
        assert_eq!(
            s.claim(&k, Slot::Job(0), &lease("a")).ok(),
            Some(Claim::Gone)
        );
    }

    #[test]
    fn staleness_needs_no_shared_clock_or_mtime() {
        let l = lease("a");
        let ttl = Duration::from_secs(10);
        // Content unchanged for a TTL by the reader's own clock.
        assert!(is_stale(&l, ttl, l.renewed_ms, ttl));
        assert!(!is_stale(
            &l,
            Duration::from_secs(9),
            l.renewed_ms + 5_000,
            ttl
        ));
        // A renewal far behind the reader's wall clock (a backlog left while daemons were down).
        assert!(is_stale(&l, Duration::ZERO, l.renewed_ms + 20_001, ttl));
        // Clocks up to a TTL apart do not make a fresh lease stale.
        assert!(!is_stale(&l, Duration::ZERO, l.renewed_ms + 19_000, ttl));
        let mut r = l.clone();
        r.released = true;
        assert!(is_stale(&r, Duration::ZERO, 0, ttl));
    }

    #[test]
    fn own_orphans_are_recognised() {
        let l = lease("me/gpu-0");
        assert!(is_own_orphan(&l, "me/gpu-0", "h", |_| false));
        assert!(!is_own_orphan(&l, "me/gpu-0", "h", |_| true));
        assert!(!is_own_orphan(&l, "other/gpu-0", "h", |_| false));
        assert!(!is_own_orphan(&l, "me/gpu-0", "elsewhere", |_| false));
    }
}
