//! `comfyd.toml`: the settings of `comfyd run`, so a machine's daemons can be configured in a
//! file. Command-line flags win over the file; relative paths are relative to the file.
//!
//! ```toml
//! #:schema ../schemas/comfyd.schema.json
//! jobs = "/srv/comfy/jobs"
//! workflows = "/srv/comfy/workflows"
//! comfy_url = "http://127.0.0.1:8188"
//! gpu = 0
//! job_timeout = 1800
//! ```

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

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
    /// The ComfyUI server of this GPU.
    pub comfy_url: Option<String>,
    /// The GPU index this daemon serves.
    pub gpu: Option<u32>,
    /// Seconds a job may run before it is interrupted.
    pub job_timeout: Option<u64>,
    /// Seconds the running job gets to finish on shutdown.
    pub grace: Option<u64>,
    /// Seconds after which a silent daemon's lease is stale.
    pub lease_ttl: Option<u64>,
    /// Jobs submitted to ComfyUI at once (default 2).
    pub pipeline: Option<usize>,
}

impl FileConfig {
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
        for p in [&mut c.jobs, &mut c.workflows, &mut c.outputs, &mut c.inputs]
            .into_iter()
            .flatten()
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
        assert_eq!(c.gpu, Some(2));
        std::fs::write(&p, "jobs = \"j\"\ngpus = 2\n").unwrap_or_else(|e| panic!("{e}"));
        let e = FileConfig::load(&p).err().unwrap_or_default();
        assert!(e.contains("comfyd.toml:2") && e.contains("gpus"), "{e}");
    }
}
