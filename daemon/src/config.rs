//! `comfyd.toml`: the settings of `comfyd run`, so a machine's daemons can be configured in a
//! file. Command-line flags win over the file; relative paths are relative to the file.
//!
//! ```toml
//! #:schema ../schemas/comfyd.schema.json
//! jobs = "/srv/comfy/jobs"
//! workflows = "/srv/comfy/workflows"
//! comfy_url = "http://127.0.0.1:8188"
//! headers = { Authorization = "Bearer ..." }   # on every request to ComfyUI (a proxy's token)
//! gpu = 0
//! job_timeout = 1800
//! metrics = "9400"                 # Prometheus at http://127.0.0.1:9400/metrics
//!
//! [scheduler]
//! affinity_bound = 300             # seconds model affinity may delay another job
//! [classes.image]
//! weight = 4                       # four image jobs per video job while both wait
//! max_wait = 600                   # no image job waits longer than this
//! [classes.video]
//! weight = 1
//!
//! [comfyui]                        # optional: comfyd starts and supervises its ComfyUI
//! command = ["/opt/comfyui/venv/bin/python", "main.py", "--port", "8188", "--cuda-device", "0"]
//! cwd = "/opt/comfyui"
//! stall = 600                      # a prompt with no progress this long restarts ComfyUI
//! warmup = "txt2img"               # run with its defaults after each start
//! ```

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::client::Headers;

/// The file's settings; every one optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "comfyd configuration")]
pub struct FileConfig {
    /// The job directory.
    pub jobs: Option<PathBuf>,
    /// The workflow repository (with its comfyc.toml).
    pub workflows: Option<PathBuf>,
    /// Where job outputs go.
    pub outputs: Option<PathBuf>,
    /// Root that file inputs are read from.
    pub inputs: Option<PathBuf>,
    /// The ComfyUI server of this GPU. An `https://` server's certificate must be signed by an
    /// authority the system trusts or by one in the PEM file named by `SSL_CERT_FILE`.
    pub comfy_url: Option<String>,
    /// Extra headers sent on every request to ComfyUI and on its websocket handshake, for a
    /// proxy in front of it: `headers = { Authorization = "Bearer ..." }`. `--header` adds to
    /// them and replaces one of the same name. Values are never logged.
    #[serde(default)]
    pub headers: HeaderTable,
    /// The GPU this daemon serves: its index (`0`) or its UUID (`"GPU-..."`).
    pub gpu: Option<GpuSpec>,
    /// Seconds a job may run before it is interrupted.
    pub job_timeout: Option<u64>,
    /// Seconds the running job gets to finish on shutdown.
    pub grace: Option<u64>,
    /// Seconds after which a silent daemon's lease is stale.
    pub lease_ttl: Option<u64>,
    /// Jobs submitted to ComfyUI at once (default 2).
    pub pipeline: Option<usize>,
    /// Milliseconds an inbox file must keep its size before it is taken (default 500).
    pub settle_ms: Option<u64>,
    /// Seconds a cancel file for an unknown job id stays before it is removed (default 600).
    pub cancel_expiry: Option<u64>,
    /// Megabytes that must stay free on the outputs' and the job folder's file systems for new
    /// jobs to be claimed (default 64).
    pub min_free_mb: Option<u64>,
    /// When ComfyUI's memory is freed before a job.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Serve Prometheus metrics at `http://ADDR/metrics`: a bare port (`"9400"`) listens on
    /// loopback, `"HOST:PORT"` where it says. Default: no metrics, nothing listens.
    pub metrics: Option<String>,
    /// Partner (paid, remote) nodes: which workflows may run them, and the account key.
    #[serde(default)]
    pub spend: SpendConfig,
    /// How the next job is chosen.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Scheduling classes (a workflow's `class`): `[classes.image] weight = 4, max_wait = 600`.
    #[serde(default)]
    pub classes: std::collections::BTreeMap<String, ClassConfig>,
    /// A ComfyUI that comfyd starts, watches and restarts (`--comfy-cmd` wins over it).
    pub comfyui: Option<ComfyuiConfig>,
    /// `comfyd serve`: the HTTP door into the job directory.
    #[serde(default)]
    pub serve: ServeConfig,
}

/// `[serve]`: the settings of `comfyd serve` (its flags win over them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where it listens: `HOST:PORT`, or a bare port on loopback (default `127.0.0.1:8480`).
    pub listen: Option<String>,
    /// A file of bearer tokens, one per line (`TOKEN` or `TOKEN read,submit,cancel`). Without
    /// one, `comfyd serve` listens on loopback only.
    pub tokens: Option<PathBuf>,
    /// Largest request body, uploads included: `32MiB` (the default), `500KB`, bytes.
    pub max_body: Option<String>,
    /// The secret webhooks are signed with (Standard Webhooks): `whsec_` and base64. Without
    /// it, runs that ask for a webhook are refused.
    pub webhook_secret: Option<String>,
}

/// `[comfyui]`: the ComfyUI this daemon starts and supervises.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComfyuiConfig {
    /// The command that starts ComfyUI, program first: `["python", "main.py", "--port",
    /// "8188", "--cuda-device", "0"]`. Without it comfyd uses a ComfyUI someone else runs.
    pub command: Option<Vec<String>>,
    /// The folder the command runs in (default: comfyd's own).
    pub cwd: Option<PathBuf>,
    /// The file ComfyUI's output is appended to (default: `logs/comfyui-gpu-N.log` beside the
    /// job directory).
    pub log: Option<PathBuf>,
    /// Seconds ComfyUI has to answer after a start before it is started again (default 300).
    pub ready_timeout: Option<u64>,
    /// Seconds a running prompt may go without a progress event before ComfyUI is restarted
    /// (default 600; 0: never).
    pub stall: Option<u64>,
    /// A workflow of the repository run with its defaults after each start, outputs not
    /// fetched, so the first real job does not pay the cold load.
    pub warmup: Option<String>,
}

/// Header names and their values: `headers = { Authorization = "Bearer ..." }`.
// `Debug` shows the names only: values carry tokens.
#[derive(Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct HeaderTable(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for HeaderTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// `gpu = 0` or `gpu = "GPU-..."`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GpuSpec {
    Index(u32),
    Uuid(String),
}

impl GpuSpec {
    /// As `--gpu` would give it.
    pub fn text(&self) -> String {
        match self {
            GpuSpec::Index(i) => i.to_string(),
            GpuSpec::Uuid(u) => u.clone(),
        }
    }
}

/// `[memory]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Before a job whose models differ from the last job's, free ComfyUI's memory when less
    /// than this is free: `"25%"` of the GPU (the default), `"6GiB"`, `"6000MB"`, or `"off"`.
    pub free_below: Option<String>,
    /// Seconds to wait for memory to come back after freeing it (default 10).
    pub confirm_within: Option<u64>,
}

/// Parses `25%`, `6GiB`, `6000MB`, `512MiB`, `off`: the memory policy's threshold.
pub fn parse_free_below(text: &str) -> Result<Option<crate::memory::Threshold>, String> {
    use crate::memory::Threshold;
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let bad = || {
        format!(
            "`{text}` is not a free-memory threshold: write a share (`25%`), a size (`6GiB`, `6000MB`) or `off`"
        )
    };
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&v) {
            return Err(bad());
        }
        return Ok(Some(Threshold::Percent(v)));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "gib" | "gb" | "g" => (1u64 << 30) as f64,
        "mib" | "mb" | "m" => (1u64 << 20) as f64,
        _ => return Err(bad()),
    };
    Ok(Some(Threshold::Bytes((v * mult) as u64)))
}

impl MemoryConfig {
    /// The policy, with `free_below` from the command line when given.
    pub fn policy(&self, flag: Option<&str>) -> Result<crate::memory::Policy, String> {
        let mut p = crate::memory::Policy::default();
        if let Some(text) = flag.or(self.free_below.as_deref()) {
            match parse_free_below(text)? {
                Some(t) => p.free_below = t,
                None => p.enabled = false,
            }
        }
        if let Some(s) = self.confirm_within {
            p.confirm_within = std::time::Duration::from_secs(s);
        }
        Ok(p)
    }
}

/// `[spend]`: partner nodes (`api_node` in ComfyUI's catalogue) run on a paid service and bill
/// the account whose key the prompt carries; comfyd runs a workflow that uses them only when it
/// is named here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendConfig {
    /// Workflow names (or `"*"` for every workflow) allowed to run partner nodes.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A file holding the comfy.org API key sent with their prompts
    /// (`extra_data.api_key_comfy_org`); else the `COMFY_ORG_API_KEY` environment variable;
    /// else none is sent (ComfyUI uses its own login, if any). The key is never written to
    /// manifests, `graph.json`, logs or error reports.
    pub api_key_file: Option<PathBuf>,
}

impl SpendConfig {
    /// The policy, reading the key file (or the environment) now.
    pub fn policy(&self) -> Result<crate::runner::Spend, String> {
        let key = match &self.api_key_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("[spend] api_key_file {}: {e}", p.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("COMFY_ORG_API_KEY").ok(),
        }
        .filter(|k| !k.is_empty());
        Ok(crate::runner::Spend {
            allow: self.allow.clone(),
            api_key: key.map(crate::runner::ApiKey),
        })
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// `fair` (classes, priority, aging, model affinity; the default) or `fifo` (arrival order).
    pub mode: Option<SchedulerMode>,
    /// Seconds model affinity may hold back the job that would otherwise run next (default 300).
    pub affinity_bound: Option<u64>,
    /// `max_wait` of classes not listed under `[classes]`, in seconds (default 3600).
    pub max_wait: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerMode {
    Fair,
    Fifo,
}

/// `[classes.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Share of jobs while several classes wait, relative to the others (default 1).
    #[schemars(range(min = 1))]
    pub weight: Option<u32>,
    /// Seconds a job of this class may wait before it goes ahead of all others (default 3600).
    pub max_wait: Option<u64>,
}

impl FileConfig {
    /// The scheduler's policy from `[scheduler]` and `[classes]`.
    pub fn policy(&self) -> crate::scheduler::Policy {
        use crate::scheduler::{
            ClassPolicy, DEFAULT_AFFINITY_BOUND, DEFAULT_MAX_WAIT, Mode, Policy,
        };
        use std::time::Duration;
        let default_wait = self
            .scheduler
            .max_wait
            .map_or(DEFAULT_MAX_WAIT, Duration::from_secs);
        Policy {
            mode: match self.scheduler.mode {
                Some(SchedulerMode::Fifo) => Mode::Fifo,
                _ => Mode::Fair,
            },
            classes: self
                .classes
                .iter()
                .map(|(name, c)| {
                    (
                        name.clone(),
                        ClassPolicy {
                            weight: c.weight.unwrap_or(1).max(1),
                            max_wait: c.max_wait.map_or(default_wait, Duration::from_secs),
                        },
                    )
                })
                .collect(),
            default_class: ClassPolicy {
                weight: 1,
                max_wait: default_wait,
            },
            affinity_bound: self
                .scheduler
                .affinity_bound
                .map_or(DEFAULT_AFFINITY_BOUND, Duration::from_secs),
        }
    }
}

impl FileConfig {
    /// The file's `headers`, then `--header` lines over them. Errors name where the bad one
    /// is (`file`'s `headers`, or `--header`), never its value.
    pub fn headers(&self, flags: &[String], file: &Path) -> Result<Headers, String> {
        let mut h = Headers::default();
        for (name, value) in &self.headers.0 {
            let (n, v) = Headers::pair(name, value)
                .map_err(|e| format!("{}: `headers`: {e}", file.display()))?;
            h.insert(n, v);
        }
        for line in flags {
            let (n, v) = Headers::parse_line(line).map_err(|e| format!("--header: {e}"))?;
            h.insert(n, v);
        }
        Ok(h)
    }

    /// Reads a config file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut c: FileConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            format!(
                "{}{}: {}",
                path.display(),
                line.map(|l| format!(":{l}")).unwrap_or_default(),
                e.message().trim()
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let comfyui = c.comfyui.as_mut();
        let (cwd, log) = comfyui.map_or((None, None), |u| (u.cwd.as_mut(), u.log.as_mut()));
        for p in [
            &mut c.jobs,
            &mut c.workflows,
            &mut c.outputs,
            &mut c.inputs,
            &mut c.spend.api_key_file,
            &mut c.serve.tokens,
        ]
        .into_iter()
        .flatten()
        .chain(cwd)
        .chain(log)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }
}

/// The JSON Schema of `comfyd.toml`, as committed under `schemas/`.
pub fn schema() -> String {
    let mut text =
        serde_json::to_string_pretty(&schemars::schema_for!(FileConfig)).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_file_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("comfyd.toml");
        std::fs::write(&p, "jobs = \"jobs\"\nworkflows = \"/abs\"\ngpu = 2\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = FileConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.jobs, Some(dir.path().join("jobs")));
        assert_eq!(c.workflows, Some(PathBuf::from("/abs")));
        assert_eq!(c.gpu, Some(GpuSpec::Index(2)));
        std::fs::write(&p, "jobs = \"j\"\ngpus = 2\n").unwrap_or_else(|e| panic!("{e}"));
        let e = FileConfig::load(&p).err().unwrap_or_default();
        assert!(e.contains("comfyd.toml:2") && e.contains("gpus"), "{e}");
        std::fs::write(&p, "gpu = \"GPU-0a1b\"\n[memory]\nfree_below = \"6GiB\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = FileConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.gpu, Some(GpuSpec::Uuid("GPU-0a1b".into())));
        assert_eq!(
            c.memory.policy(None).map(|p| p.free_below),
            Ok(crate::memory::Threshold::Bytes(6 << 30))
        );
    }

    #[test]
    fn headers_come_from_the_file_then_the_flags_and_errors_never_show_a_value() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("comfyd.toml");
        std::fs::write(
            &p,
            "headers = { Authorization = \"Bearer file-s3cret\", X-Team = \"a\" }\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = FileConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("file-s3cret"));
        let h = c
            .headers(&["x-team: b".into(), "X-Other: c".into()], &p)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.names(), ["authorization", "x-team", "x-other"]);
        assert_eq!(h.map()["x-team"], "b");
        let e = c
            .headers(&["Authorization Bearer flag-s3cret".into()], &p)
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("--header: expected `Name: value`"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::write(&p, "headers = { \"Bad Name\" = \"file-s3cret\" }\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = FileConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        let e = c.headers(&[], &p).err().unwrap_or_default();
        assert!(e.contains("comfyd.toml: `headers`: `Bad Name`"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn free_below_reads_shares_sizes_and_off_and_says_what_it_wants() {
        use crate::memory::Threshold;
        assert_eq!(parse_free_below("25%"), Ok(Some(Threshold::Percent(25.0))));
        assert_eq!(
            parse_free_below("6 GiB"),
            Ok(Some(Threshold::Bytes(6 << 30)))
        );
        assert_eq!(
            parse_free_below("1.5GB"),
            Ok(Some(Threshold::Bytes(3 << 29)))
        );
        assert_eq!(
            parse_free_below("512MiB"),
            Ok(Some(Threshold::Bytes(512 << 20)))
        );
        assert_eq!(parse_free_below("off"), Ok(None));
        for bad in ["", "25", "101%", "-3%", "6TB", "lots"] {
            let e = parse_free_below(bad).err().unwrap_or_default();
            assert!(e.contains("`25%`"), "{bad}: {e}");
        }
        let p = MemoryConfig::default()
            .policy(Some("off"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.enabled);
    }

    #[test]
    fn the_comfyui_table_takes_a_command_and_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("comfyd.toml");
        std::fs::write(
            &p,
            "[comfyui]\ncommand = [\"python\", \"main.py\"]\ncwd = \"comfy\"\nlog = \"/var/log/c.log\"\nstall = 0\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = FileConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        let u = c.comfyui.unwrap_or_default();
        assert_eq!(u.command, Some(vec!["python".into(), "main.py".into()]));
        assert_eq!(u.cwd, Some(dir.path().join("comfy")));
        assert_eq!(u.log, Some(PathBuf::from("/var/log/c.log")));
        assert_eq!(u.stall, Some(0));
        std::fs::write(&p, "[comfyui]\ncommand = \"python main.py\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = FileConfig::load(&p).err().unwrap_or_default();
        assert!(e.contains("comfyd.toml:2"), "{e}");
        std::fs::write(&p, "[comfyui]\ncomand = [\"python\"]\n").unwrap_or_else(|e| panic!("{e}"));
        let e = FileConfig::load(&p).err().unwrap_or_default();
        assert!(e.contains("comand"), "{e}");
    }
}
