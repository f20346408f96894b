//! Job files: what users drop into `jobs/inbox/`, parsed into [`Job`]s.
//!
//! A `.toml` or `.json` file is one job; a `.jsonl` file is one job per line; a `[sweep]`
//! table expands into the cartesian product of its lists. Job files are untrusted: their size
//! and the number of jobs they expand to are bounded, unknown fields are rejected, and ids are
//! restricted to a safe character set because they name output folders.
//!
//! ```toml
//! workflow = "txt2img"            # or "txt2img@1.0.0"
//! id = "mug"                      # optional; default: the file name
//! priority = 0                    # optional; higher runs first
//! timeout = 600                   # optional, seconds
//! [inputs]
//! prompt = "a white ceramic mug on a marble countertop"
//! [sweep]                         # optional: one job per combination
//! seed = [1, 2, 3]
//! steps = [20, 40]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Largest job file read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest job timeout a file may ask for, in seconds.
pub const MAX_TIMEOUT_S: u64 = 30 * 24 * 3600;
/// Most jobs one file may expand to (lines times sweep combinations).
pub const MAX_JOBS_PER_FILE: usize = 100_000;

/// One job, ready to be validated against its workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    /// `name` or `name@version`.
    pub workflow: String,
    pub inputs: Map<String, Value>,
    pub priority: i64,
    pub timeout_s: Option<u64>,
    /// Where it came from: the line of a JSONL file, the combination of a sweep.
    pub origin: Origin,
}

/// Where in its file a job came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Origin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_index: Option<usize>,
}

/// Why a job file (or one of its lines) cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct JobFileError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl JobFileError {
    fn new(line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// The fields of one job as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    workflow: String,
    id: Option<String>,
    #[serde(default)]
    priority: i64,
    timeout: Option<u64>,
    #[serde(default)]
    inputs: Map<String, Value>,
    sweep: Option<BTreeMap<String, Vec<Value>>>,
}

/// The jobs of a file, kept unexpanded: a sweep of a million combinations is one spec and a
/// million small index entries, and a job's inputs are built only when it runs ([`Parsed::job`]).
/// Parsing is a pure function of the bytes, so any daemon that reads a file sees the same jobs
/// under the same indices.
#[derive(Debug, Default)]
pub struct Parsed {
    specs: Vec<(Spec, Option<usize>)>,
    /// Per job: its spec, its sweep combination, its id.
    index: Vec<(u32, Option<u32>, String)>,
    /// The first [`MAX_REPORTED_ERRORS`] problems.
    pub errors: Vec<JobFileError>,
    /// How many problems there were in all.
    pub error_count: usize,
    /// Bytes of the text that were read: a JSONL line without its newline is still being
    /// written and is left for later.
    pub parsed_len: usize,
}

/// Problems of one file kept for its report; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Most bytes a file may expand to (jobs times the bytes of each job's spec), checked before
/// anything is expanded: a small file with a huge sweep of huge inputs is refused, not run.
pub const MAX_EXPANDED_BYTES: u64 = 1 << 30;

impl Parsed {
    fn error(&mut self, e: JobFileError) {
        self.error_count += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(e);
        }
    }

    /// Jobs in the file.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The id of job `k`.
    pub fn id(&self, k: usize) -> Option<&str> {
        self.index.get(k).map(|(_, _, id)| id.as_str())
    }

    /// Job `k`, with its inputs built.
    pub fn job(&self, k: usize) -> Option<Job> {
        let (spec, combo, id) = self.index.get(k)?;
        let (spec, line) = self.specs.get(*spec as usize)?;
        let mut inputs = spec.inputs.clone();
        if let (Some(sweep), Some(index)) = (&spec.sweep, combo) {
            let mut rest = *index as usize;
            // The last key varies fastest, like nested loops in the order written.
            for (k, values) in sweep.iter().rev() {
                inputs.insert(k.clone(), values[rest % values.len()].clone());
                rest /= values.len();
            }
        }
        Some(Job {
            id: id.clone(),
            workflow: spec.workflow.clone(),
            inputs,
            priority: spec.priority,
            timeout_s: spec.timeout,
            origin: Origin {
                line: *line,
                sweep_index: combo.map(|c| c as usize),
            },
        })
    }

    /// Every job, built one at a time.
    pub fn jobs(&self) -> impl Iterator<Item = Job> + '_ {
        (0..self.len()).filter_map(|k| self.job(k))
    }
}

/// One job from JSON text: it must be an object (serde would read an array by position).
fn json_spec(text: &str) -> Result<Spec, (Option<usize>, String)> {
    // serde reads a struct from an array by position; a job is an object.
    let start = text.trim_start();
    if start.starts_with('[') {
        let what = serde_json::from_str::<serde_json::Value>(text)
            .map(|v| kind(&v))
            .unwrap_or("an array");
        return Err((
            Some(1),
            format!("a job is a JSON object with `workflow` and `inputs`, not {what}"),
        ));
    }
    serde_json::from_str(text).map_err(|e| (Some(e.line()), e.to_string()))
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Whether a string may be an id: it names a folder, so no separators, no leading dot.
pub fn is_safe_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !s.starts_with('.')
        && !s.contains("..")
}

/// Whether a JSONL text is still being written: its last line has no newline yet.
pub fn jsonl_incomplete(name: &str, bytes: &[u8]) -> bool {
    name.to_ascii_lowercase().ends_with(".jsonl") && bytes.last().is_some_and(|b| *b != b'\n')
}

/// Parses a job file's text. `name` is the file name (its stem is the default id).
pub fn parse(name: &str, text: &str) -> Result<Parsed, JobFileError> {
    parse_with(name, text, false)
}

/// Like [`parse`]; with `complete`, a JSONL's last line counts even without its newline (the
/// file is known to be whole: it was renamed in, or has not changed for a while).
pub fn parse_with(name: &str, text: &str, complete: bool) -> Result<Parsed, JobFileError> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) => (s, e.to_ascii_lowercase()),
        None => (name, String::new()),
    };
    // A byte-order mark is not part of the document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Parsed {
        parsed_len: text.len(),
        ..Parsed::default()
    };
    let mut bytes: u64 = 0;
    match ext.as_str() {
        "toml" => {
            let spec: Spec = toml::from_str(text).map_err(|e| {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                JobFileError::new(line, e.message().trim().to_owned())
            })?;
            expand(spec, stem, None, text.len(), &mut bytes, &mut out)?;
        }
        "json" => {
            let spec = json_spec(text).map_err(|(line, m)| JobFileError::new(line, m))?;
            expand(spec, stem, None, text.len(), &mut bytes, &mut out)?;
        }
        "jsonl" => {
            // Only whole lines: a last line without its newline may still be being written.
            let whole = if complete {
                text.len()
            } else {
                text.rfind('\n').map_or(0, |i| i + 1)
            };
            out.parsed_len = whole;
            for (i, line) in text[..whole].lines().enumerate() {
                let n = i + 1;
                if line.trim().is_empty() {
                    continue;
                }
                let spec = match json_spec(line) {
                    Ok(s) => s,
                    Err((_, m)) => {
                        out.error(JobFileError::new(Some(n), m));
                        continue;
                    }
                };
                let default_id = format!("{stem}-{n:05}");
                match expand(spec, &default_id, Some(n), line.len(), &mut bytes, &mut out) {
                    Ok(()) => {}
                    // A file over the limits is refused whole.
                    Err(e) if e.message.contains("limit") || e.message.contains("more than") => {
                        return Err(e);
                    }
                    Err(mut e) => {
                        e.line = Some(n);
                        out.error(e);
                    }
                }
            }
            if out.index.is_empty() && out.error_count == 0 && whole == text.len() {
                return Err(JobFileError::new(None, "the file holds no jobs"));
            }
        }
        "" => {
            return Err(JobFileError::new(
                None,
                format!(
                    "`{name}` is not a job file: it has no extension (name job files .toml, .json or .jsonl)"
                ),
            ));
        }
        other => {
            return Err(JobFileError::new(
                None,
                format!("`.{other}` is not a job file: use .toml, .json or .jsonl"),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (spec, _, id) in &out.index {
        if !seen.insert(id.as_str()) {
            let line = out.specs.get(*spec as usize).and_then(|s| s.1);
            return Err(JobFileError::new(
                line,
                format!("job id `{id}` appears twice in this file"),
            ));
        }
    }
    Ok(out)
}

/// Checks one spec and adds its jobs to the index, unexpanded. Limits (jobs, and jobs times
/// the spec's bytes) are checked before anything is added.
fn expand(
    spec: Spec,
    default_id: &str,
    line: Option<usize>,
    spec_bytes: usize,
    bytes: &mut u64,
    out: &mut Parsed,
) -> Result<(), JobFileError> {
    if spec.workflow.is_empty()
        || spec.workflow.len() > 200
        || !spec.workflow.split('@').all(is_safe_id)
        || spec.workflow.matches('@').count() > 1
    {
        return Err(JobFileError::new(
            line,
            format!(
                "`{}` is not a workflow name (`name` or `name@version`)",
                spec.workflow
            ),
        ));
    }
    if let Some(t) = spec.timeout
        && !(1..=MAX_TIMEOUT_S).contains(&t)
    {
        return Err(JobFileError::new(
            line,
            format!("`timeout = {t}`: give seconds between 1 and {MAX_TIMEOUT_S} (30 days)"),
        ));
    }
    let id = spec.id.clone().unwrap_or_else(|| default_id.to_owned());
    if !is_safe_id(&id) {
        return Err(JobFileError::new(
            line,
            format!(
                "job id `{}` is not allowed: use 1-128 letters, digits, `_`, `-` and `.`",
                id.chars().take(140).collect::<String>()
            ),
        ));
    }
    let mut combos: usize = 1;
    if let Some(sweep) = &spec.sweep {
        for (k, values) in sweep {
            if values.is_empty() {
                return Err(JobFileError::new(
                    line,
                    format!("sweep `{k}` has no values"),
                ));
            }
            if spec.inputs.contains_key(k) {
                return Err(JobFileError::new(
                    line,
                    format!("`{k}` is both an input and a sweep"),
                ));
            }
            combos = combos.saturating_mul(values.len());
        }
    }
    if combos > MAX_JOBS_PER_FILE {
        return Err(JobFileError::new(
            line,
            format!(
                "the sweep expands to {combos} jobs, more than {MAX_JOBS_PER_FILE} (the limit per file)"
            ),
        ));
    }
    if out.index.len() + combos > MAX_JOBS_PER_FILE {
        return Err(JobFileError::new(
            line,
            format!("the file expands to more than {MAX_JOBS_PER_FILE} jobs (the limit per file)"),
        ));
    }
    let expanded = (combos as u64).saturating_mul(spec_bytes as u64);
    *bytes = bytes.saturating_add(expanded);
    if *bytes > MAX_EXPANDED_BYTES {
        return Err(JobFileError::new(
            line,
            format!(
                "the file expands to {combos} jobs of {spec_bytes} bytes each, over the limit of {MAX_EXPANDED_BYTES} bytes per file; split it or shorten its inputs"
            ),
        ));
    }
    let spec_index = out.specs.len() as u32;
    let swept = spec.sweep.is_some();
    out.specs.push((spec, line));
    if swept {
        for index in 0..combos {
            out.index.push((
                spec_index,
                Some(index as u32),
                format!("{id}-{:04}", index + 1),
            ));
        }
    } else {
        out.index.push((spec_index, None, id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_toml_job() {
        let p = parse(
            "mug.toml",
            "workflow = \"txt2img\"\npriority = 2\n[inputs]\nprompt = \"a mug\"\nseed = 42\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.len(), 1);
        let j = &p.job(0).unwrap_or_else(|| panic!("no job"));
        assert_eq!(
            (j.id.as_str(), j.workflow.as_str(), j.priority),
            ("mug", "txt2img", 2)
        );
        assert_eq!(j.inputs["seed"], 42);
    }

    #[test]
    fn sweeps_expand_in_written_order() {
        let p = parse("s.toml", "workflow = \"w@1.0.0\"\n[inputs]\nprompt = \"x\"\n[sweep]\nseed = [1, 2]\nsteps = [10, 20, 30]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let jobs: Vec<Job> = p.jobs().collect();
        assert_eq!(jobs.len(), 6);
        assert_eq!(jobs[0].id, "s-0001");
        assert_eq!(
            (&jobs[0].inputs["seed"], &jobs[0].inputs["steps"]),
            (&1.into(), &10.into())
        );
        assert_eq!(
            (&jobs[1].inputs["seed"], &jobs[1].inputs["steps"]),
            (&1.into(), &20.into())
        );
        assert_eq!(
            (&jobs[5].inputs["seed"], &jobs[5].inputs["steps"]),
            (&2.into(), &30.into())
        );
    }

    #[test]
    fn jsonl_keeps_good_lines_and_reports_bad_ones() {
        let text = "{\"workflow\":\"w\",\"inputs\":{\"a\":1}}\n\n{\"workflow\":\"w\",\"oops\":1}\n{\"workflow\":\"w\",\"id\":\"x\"}\nnot json\n";
        let p = parse("batch.jsonl", text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.jobs().map(|j| j.id).collect::<Vec<_>>(),
            ["batch-00001", "x"]
        );
        assert_eq!(
            p.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            [Some(3), Some(5)]
        );
        assert!(p.errors[0].message.contains("oops"));
    }

    #[test]
    fn a_jsonl_line_still_being_written_waits() {
        let text = "{\"workflow\":\"w\"}\n{\"workflow\":\"w\"";
        let p = parse("b.jsonl", text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.len(), p.parsed_len), (1, 17));
        assert!(jsonl_incomplete("b.jsonl", text.as_bytes()));
        let more = format!("{text}}}\n");
        let q = parse("b.jsonl", &more).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.len(), 2);
        // Earlier jobs keep their indices and ids when lines are added.
        assert_eq!(p.id(0), q.id(0));
    }

    #[test]
    fn hostile_fields_are_refused() {
        for (name, text) in [
            ("a.toml", "workflow = \"../../etc\"\n"),
            ("a.toml", "workflow = \"w\"\nid = \"../x\"\n"),
            ("a.toml", "workflow = \"w\"\nid = \"a/b\"\n"),
            ("a.toml", "workflow = \"w\"\nid = \".hidden\"\n"),
            ("a.toml", "workflow = \"w\"\nextra = 1\n"),
            ("a.toml", "workflow = \"w\"\n[sweep]\nseed = []\n"),
            (
                "a.toml",
                "workflow = \"w\"\n[sweep]\na = [1,2,3,4,5,6,7,8,9,10]\nb = [1,2,3,4,5,6,7,8,9,10]\nc = [1,2,3,4,5,6,7,8,9,10]\nd = [1,2,3,4,5,6,7,8,9,10]\ne = [1,2,3,4,5,6,7,8,9,10]\nf = [1,2]\n",
            ),
            ("a.json", "[1,2]"),
            ("a.yaml", "workflow: w"),
            ("a.jsonl", "\n\n"),
            (
                "a.jsonl",
                "{\"workflow\":\"w\",\"id\":\"x\"}\n{\"workflow\":\"w\",\"id\":\"x\"}\n",
            ),
        ] {
            assert!(parse(name, text).is_err(), "{name}: {text}");
        }
        assert!(!is_safe_id("a\u{0}b"));
        // The sweep bomb: a small file that would expand to gigabytes is refused unexpanded.
        let bomb = format!(
            "workflow = \"w\"\n[inputs]\nprompt = \"{}\"\n[sweep]\na = [{}]\nb = [{}]\n",
            "x".repeat(200_000),
            vec!["1"; 100].join(","),
            vec!["1"; 1000].join(",")
        );
        let e = parse("bomb.toml", &bomb)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(e.contains("over the limit"), "{e}");
        assert!(!is_safe_id(&"a".repeat(129)));
    }
}
