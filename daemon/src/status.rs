//! `comfyd status`: jobs by state across every file of a job directory, and each daemon's own
//! status file, with a daemon whose process is gone shown as stopped.

use std::path::Path;

use serde::Serialize;

use crate::report::Status;
use crate::store::{DirStore, JobStore};

/// What `comfyd status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Job files dropped and not yet taken in.
    pub inbox_files: usize,
    /// Jobs of taken-in files: waiting, held by a daemon, or with a result.
    pub jobs_waiting: usize,
    pub jobs_running: usize,
    pub jobs_ended: usize,
    /// Finished job files.
    pub files_done: usize,
    pub files_failed: usize,
    pub daemons: Vec<Status>,
}

/// Reads a job directory.
pub fn read(jobs: &Path) -> Result<Overview, String> {
    let store = DirStore::new(jobs);
    if !store.inbox().is_dir() {
        return Err(format!(
            "`{}` is not a job directory (no inbox/)",
            jobs.display()
        ));
    }
    let count = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir)
            .map(|r| {
                r.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(keep))
                    .count()
            })
            .unwrap_or(0)
    };
    let job_file = |n: &str| !n.starts_with('.') && !n.ends_with(".error.json");
    let mut o = Overview {
        inbox_files: count(&store.inbox(), &|n| job_file(n) && !n.ends_with(".cancel")),
        jobs_waiting: 0,
        jobs_running: 0,
        jobs_ended: 0,
        files_done: count(&store.done(), &job_file),
        files_failed: count(&store.failed(), &job_file),
        daemons: Vec::new(),
    };
    let listing = store.list().unwrap_or_default();
    // A file taken in whose jobs no daemon has looked at yet: all of them wait.
    for taken in &listing.taken {
        o.jobs_waiting += store
            .read_taken(taken, crate::job::MAX_FILE_BYTES)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| crate::job::parse(taken.name(), &t).ok())
            .map_or(0, |p| p.len());
    }
    for key in listing.files {
        let Ok(state) = store.state(&key) else {
            continue;
        };
        let total = store
            .read(&key, crate::job::MAX_FILE_BYTES)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| crate::job::parse(key.name(), &t).ok())
            .map_or(0, |p| p.len());
        let mut running = 0;
        for slot in state.leases.keys() {
            if let crate::store::Slot::Job(i) = slot
                && !state.results.contains(i)
                && store
                    .lease(&key, *slot)
                    .ok()
                    .flatten()
                    .is_some_and(|l| !l.released)
            {
                running += 1;
            }
        }
        o.jobs_ended += state.results.len();
        o.jobs_running += running;
        o.jobs_waiting += total.saturating_sub(state.results.len() + running);
    }
    let mut paths: Vec<_> = std::fs::read_dir(store.status())
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    let host = crate::daemon::Settings::new(jobs, jobs, "").owner();
    let host = host.rsplit_once('/').map_or(host.as_str(), |(h, _)| h);
    for p in paths {
        let Some(mut s) = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Status>(&b).ok())
        else {
            continue;
        };
        // A daemon killed without a word left "running" behind: its process says otherwise.
        if s.owner.starts_with(&format!("{host}/")) && !crate::fsutil::pid_alive(s.pid) {
            s.state = "stopped".into();
            s.running.clear();
            s.progress = None;
        }
        o.daemons.push(s);
    }
    Ok(o)
}

impl Overview {
    /// The overview for people.
    pub fn human(&self) -> String {
        let mut out = format!(
            "jobs: {} waiting, {} running, {} ended\nfiles: {} in inbox, {} done, {} failed\n",
            self.jobs_waiting,
            self.jobs_running,
            self.jobs_ended,
            self.inbox_files,
            self.files_done,
            self.files_failed
        );
        let now = crate::runner::now_ms();
        for d in &self.daemons {
            let doing = match (d.state.as_str(), d.running.first()) {
                ("stopped", _) => "stopped".to_owned(),
                (_, None) => format!("{}, idle", d.state),
                (state, Some(r)) => {
                    let mut line = format!(
                        "{state}, {} job{} ({} {} from {})",
                        d.running.len(),
                        if d.running.len() == 1 { "" } else { "s" },
                        r.phase,
                        r.job,
                        r.file
                    );
                    if let Some(p) = &d.progress {
                        line.push_str(&format!("; {}", p.line()));
                    }
                    line
                }
            };
            out.push_str(&format!(
                "{}: {doing}; {} done, {} failed, updated {} s ago\n",
                d.owner,
                d.jobs_done,
                d.jobs_failed,
                now.saturating_sub(d.updated_ms) / 1000
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_taken_in_but_not_opened_counts_its_jobs_as_waiting() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = DirStore::new(dir.path());
        store.create().unwrap_or_else(|e| panic!("{e}"));
        let dropped = store.inbox().join("three.jsonl");
        let lines = (0..3)
            .map(|i| format!("{{\"workflow\": \"w\", \"id\": \"j{i}\"}}\n"))
            .collect::<String>();
        std::fs::write(&dropped, lines).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(store.inbox().join("later.toml"), "workflow = \"w\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let taken = store.take(&dropped).unwrap_or_else(|e| panic!("{e}"));
        assert!(taken.is_some(), "the file was taken in");

        let o = read(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((o.inbox_files, o.jobs_waiting, o.jobs_running), (1, 3, 0));
    }
}
