//! `comfyd serve`: the workflows as a typed REST API over the job directory.
//!
//! The server is a door into the same job store the file path uses: a run is a one-job file
//! written into `inbox/`, run by whichever `comfyd run` daemons watch the directory, and read
//! back from the store and the outputs ([`runs`]). Inputs are validated with the workflow's
//! schema before anything is written; `Idempotency-Key` makes a submission happen once across
//! retries, concurrent requests and restarts. [`routes`] has the endpoints, [`auth`] the bearer
//! tokens, [`openapi`] the document generated from the workflows, [`uploads`] the
//! content-addressed file inputs, [`webhooks`] the signed notifications, [`page`] the form page.

pub mod auth;
pub mod openapi;
pub mod page;
pub mod routes;
pub mod runs;
pub mod uploads;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use comfyc::Workflow;
use serde_json::Value;

/// Where `comfyd serve` listens unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";
/// The largest request body unless told: 32 MiB.
pub const DEFAULT_MAX_BODY: u64 = 32 << 20;

/// `comfyd serve`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A comfyd.toml: `jobs`, `workflows`, `inputs`, `outputs` and its `[serve]` table (flags
    /// win over it) [default: comfyd.toml in the current directory, when there is one].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to listen: `HOST:PORT`, or a bare port on loopback [default: 127.0.0.1:8480].
    /// Without --tokens only a loopback address is accepted.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The job directory runs are written into (the one `comfyd run` watches).
    #[arg(long, value_name = "DIR")]
    pub jobs: Option<PathBuf>,
    /// The workflow repository (with its comfyc.toml): the workflows served.
    #[arg(long, value_name = "DIR")]
    pub workflows: Option<PathBuf>,
    /// The daemons' input root: uploads are stored in its `uploads/`, and file inputs given as
    /// paths must lie in it [default: none, file inputs are refused].
    #[arg(long, value_name = "DIR")]
    pub inputs: Option<PathBuf>,
    /// Where the daemons write outputs [default: `outputs/` beside the job directory].
    #[arg(long, value_name = "DIR")]
    pub outputs: Option<PathBuf>,
    /// Bearer tokens, one per line: `TOKEN` (every scope) or `TOKEN read,submit,cancel`
    /// [default: none: no token is asked for, and only loopback addresses are served].
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// The largest request body, uploads included: bytes, or `500KB`, `32MiB`, `1GB`
    /// [default: 32MiB]. Larger requests are answered 413.
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
}

/// Everything the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub jobs: PathBuf,
    pub workflows: PathBuf,
    pub inputs: Option<PathBuf>,
    pub outputs: PathBuf,
    pub tokens: Option<auth::Tokens>,
    pub max_body: u64,
    pub webhook_secret: Option<webhooks::Secret>,
}

/// `32MiB`, `500KB`, `1GB`, `1048576`: a size in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("`{text}` is not a size: write bytes, or like `500KB`, `32MiB`, `1GB`");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|n| *n > 0).ok_or_else(bad)
}

impl Args {
    /// The settings: flags, then comfyd.toml, then defaults. Errors name the flag or file.
    pub fn settings(self) -> Result<Settings, String> {
        let config = self
            .config
            .or_else(|| Some(PathBuf::from("comfyd.toml")).filter(|p| p.is_file()));
        let file = match &config {
            Some(p) => crate::config::FileConfig::load(p)?,
            None => crate::config::FileConfig::default(),
        };
        let config_name = config
            .as_deref()
            .unwrap_or(Path::new("comfyd.toml"))
            .display()
            .to_string();
        let (Some(jobs), Some(workflows)) =
            (self.jobs.or(file.jobs), self.workflows.or(file.workflows))
        else {
            return Err("say where the job directory and the workflows are: --jobs DIR --workflows DIR (or in comfyd.toml)".into());
        };
        let listen = match (self.listen, file.serve.listen) {
            (Some(t), _) => crate::metrics::parse_addr(&t).map_err(|e| format!("--listen {e}"))?,
            (None, Some(t)) => crate::metrics::parse_addr(&t)
                .map_err(|e| format!("{config_name}: [serve] listen: {e}"))?,
            (None, None) => crate::metrics::parse_addr(DEFAULT_LISTEN)?,
        };
        let tokens = match self.tokens.or(file.serve.tokens) {
            Some(p) => Some(auth::Tokens::load(&p)?),
            None => None,
        };
        let max_body = match (self.max_body, file.serve.max_body) {
            (Some(t), _) => parse_size(&t).map_err(|e| format!("--max-body: {e}"))?,
            (None, Some(t)) => {
                parse_size(&t).map_err(|e| format!("{config_name}: [serve] max_body: {e}"))?
            }
            (None, None) => DEFAULT_MAX_BODY,
        };
        let webhook_secret = match file.serve.webhook_secret {
            Some(s) => Some(
                webhooks::Secret::parse(&s)
                    .map_err(|e| format!("{config_name}: [serve] webhook_secret: {e}"))?,
            ),
            None => None,
        };
        let outputs = self.outputs.or(file.outputs).unwrap_or_else(|| {
            jobs.parent()
                .map_or_else(|| jobs.join("outputs"), |p| p.join("outputs"))
        });
        Ok(Settings {
            listen,
            jobs,
            workflows,
            inputs: self.inputs.or(file.inputs),
            outputs,
            tokens,
            max_body,
            webhook_secret,
        })
    }
}

/// The workflows served: each name's highest version, with its UI schema and the document.
pub struct Catalog {
    pub by_name: BTreeMap<String, Arc<Workflow>>,
    pub uischemas: BTreeMap<String, Value>,
    pub openapi: Value,
}

impl Catalog {
    /// Compiles the repository; workflows that do not compile are left out (and logged).
    pub fn load(dir: &Path, secured: bool) -> Result<Catalog, String> {
        if !dir.join(comfyc::compile::CONFIG_FILE).is_file() {
            return Err(format!(
                "{}: no {} there: --workflows names a workflow repository",
                dir.display(),
                comfyc::compile::CONFIG_FILE
            ));
        }
        let c = comfyc::compile(Arc::new(comfyc::FsLoader::new(dir)));
        let (errors, _) = comfyc::diagnostic::count(&c.diagnostics);
        if errors > 0 {
            let text =
                comfyc::diagnostic::render_all(&c.diagnostics, &c.sources, Default::default());
            tracing::error!(
                errors,
                "some workflows do not compile; they are not served\n{text}"
            );
        }
        let mut by_name: BTreeMap<String, Arc<Workflow>> = BTreeMap::new();
        for w in c.workflows {
            let newer = by_name.get(&w.name).is_none_or(|old| {
                comfyc::version::cmp_opt(w.version.as_deref(), old.version.as_deref()).is_gt()
            });
            if newer {
                by_name.insert(w.name.clone(), Arc::new(w));
            }
        }
        let uischemas = by_name
            .iter()
            .map(|(n, w)| (n.clone(), ui_schema(w)))
            .collect();
        let entries: Vec<openapi::Entry<'_>> = by_name
            .values()
            .map(|w| openapi::Entry {
                name: &w.name,
                title: w.title.as_deref(),
                description: w.description.as_deref(),
                schema: &w.schema,
                files: w
                    .inputs
                    .iter()
                    .filter(|i| i.ty.is_file())
                    .map(|i| i.name.as_str())
                    .collect(),
                required_files: w
                    .inputs
                    .iter()
                    .filter(|i| {
                        i.ty.is_file()
                            && w.schema["required"]
                                .as_array()
                                .is_some_and(|r| r.iter().any(|n| n == i.name.as_str()))
                    })
                    .map(|i| i.name.as_str())
                    .collect(),
            })
            .collect();
        let openapi = openapi::document(&entries, secured);
        Ok(Catalog {
            by_name,
            uischemas,
            openapi,
        })
    }
}

/// The RJSF UI schema of a workflow, as `comfyc build` writes it beside the input schema.
fn ui_schema(w: &Workflow) -> Value {
    comfyc::uischema::ui_schema(w)
}

/// How often the workflow repository is looked at for changes.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A hash of every file's path, size and modification time under `dir` (hidden ones and
/// anything deeper than 8 levels aside): it changes when a workflow is added, edited or
/// removed.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut entries = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if depth < 8 {
                    stack.push((e.path(), depth + 1));
                }
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            entries.push((e.path(), meta.len(), mtime));
        }
    }
    entries.sort();
    let mut h = std::hash::DefaultHasher::new();
    entries.hash(&mut h);
    h.finish()
}

/// A running server; dropping it stops it (the metrics endpoint's handle, the same shape).
pub use crate::metrics::Server;

/// Checks the settings, loads the workflows, binds, and serves in the background.
pub async fn start(settings: Settings) -> Result<Server, String> {
    if settings.tokens.is_none() && !settings.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {}: without --tokens FILE only a loopback address is served (anyone who reaches it could run jobs)",
            settings.listen
        ));
    }
    let catalog = Catalog::load(&settings.workflows, settings.tokens.is_some())?;
    let runs = Arc::new(
        runs::Runs::open(&settings.jobs, &settings.outputs)
            .map_err(|e| format!("{}: {e}", settings.jobs.display()))?,
    );
    if let Some(root) = &settings.inputs
        && !root.is_dir()
    {
        return Err(format!("--inputs {}: not a folder", root.display()));
    }
    let hooks = Arc::new(webhooks::Hooks::new(settings.webhook_secret.clone()));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        workflows = catalog.by_name.len(),
        jobs = %settings.jobs.display(),
        "serving at http://{addr}/ (API under /v1, document at /openapi.json)"
    );
    let mut seen = fingerprint(&settings.workflows);
    let app = Arc::new(routes::App {
        runs: runs.clone(),
        catalog: std::sync::RwLock::new(Arc::new(catalog)),
        tokens: settings.tokens.clone(),
        inputs: settings.inputs.clone(),
        hooks: hooks.clone(),
    });
    let router = routes::router(app.clone(), settings.max_body);
    // The daemons reload workflows when the repository changes; so does the server, so that
    // what it validates is what they run.
    let (dir, secured) = (settings.workflows.clone(), settings.tokens.is_some());
    let reload = async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let d = dir.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&d)).await else {
                continue;
            };
            if now == seen {
                continue;
            }
            seen = now;
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || Catalog::load(&d, secured)).await {
                Ok(Ok(c)) => {
                    tracing::info!(workflows = c.by_name.len(), "workflows reloaded");
                    if let Ok(mut slot) = app.catalog.write() {
                        *slot = Arc::new(c);
                    }
                }
                Ok(Err(e)) => tracing::error!("reloading workflows: {e}; the last ones stay"),
                Err(_) => {}
            }
        }
    };
    let task = tokio::spawn(async move {
        let hooks_task = tokio::spawn(hooks.run(runs));
        let reload_task = tokio::spawn(reload);
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the HTTP server stopped: {e}");
        }
        hooks_task.abort();
        reload_task.abort();
    });
    Ok(Server::new(addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("1 GB"), Ok(1_000_000_000));
        for bad in ["", "0", "MB", "1.5MB", "12XB", "99999999999999999999GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
