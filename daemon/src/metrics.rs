//! Prometheus metrics: what the daemon does, as counters, gauges and histograms, served at
//! `GET /metrics` on `--metrics ADDR` in the Prometheus text format (version 0.0.4).
//!
//! [`Metrics`] is a cheap handle (an `Arc`) with one method per event; the owner loop, the
//! runner and whatever else watches ComfyUI or the GPU call it where the event happens. Without
//! `--metrics` the handle is empty: every method returns at once and nothing listens.
//!
//! Families (all prefixed `comfyd_`, all with the constant label `gpu`):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `jobs_total` | counter | `workflow`, `outcome` | jobs finished here: `done`, `failed`, `cancelled`, `timeout`, `interrupted`, `skipped` |
//! | `queue_wait_seconds` | histogram | | how long a job waited (as this daemon saw it) before it was claimed |
//! | `execution_seconds` | histogram | | ComfyUI's execution time of jobs done |
//! | `model_load_seconds` | histogram | | execution time of a job's loader nodes that were not cached |
//! | `queue_depth` | gauge | `class` | jobs waiting, per scheduling class |
//! | `prompts_in_flight` | gauge | | prompts of this daemon at ComfyUI (queued or executing) |
//! | `model_switches_total` | counter | | jobs started whose model set differs from the last one's |
//! | `free_calls_total` | counter | | `POST /free` calls |
//! | `oom_retries_total` | counter | | jobs run again after running out of memory |
//! | `comfyui_restarts_total` | counter | | ComfyUI (supervised) started again |
//! | `comfyui_up` | gauge | | 1 when the last call to ComfyUI was answered, else 0 |
//! | `vram_used_bytes`, `vram_total_bytes` | gauge | | the GPU's memory as last read |
//! | `job_vram_peak_bytes` | histogram | | highest VRAM used while a job executed |
//! | `claims_total` | counter | | jobs claimed from the job store |
//! | `takeovers_total` | counter | | jobs taken over from a daemon whose lease went stale |

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::manifest::{Manifest, NodeTiming};

/// The daemon's metrics; empty (every call a no-op) unless made with [`Metrics::new`].
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Families>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

/// How a job ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
    Cancelled,
    Timeout,
    Interrupted,
    /// Found finished already (its manifest exists): not run again.
    Skipped,
}

impl Outcome {
    /// The outcome of a job that failed with this [`crate::runner::Failure`] kind.
    pub fn of_failure(kind: &str) -> Outcome {
        match kind {
            "cancelled" => Outcome::Cancelled,
            "timeout" => Outcome::Timeout,
            "interrupted" => Outcome::Interrupted,
            _ => Outcome::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Timeout => "timeout",
            Outcome::Interrupted => "interrupted",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The label value of a job whose workflow is not in the repository (a typo in a job file must
/// not make a new series per spelling).
pub const UNKNOWN_WORKFLOW: &str = "(unknown)";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    workflow: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

struct Families {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    queue_wait: Histogram,
    execution: Histogram,
    model_load: Histogram,
    queue_depth: Family<ClassLabels, Gauge>,
    /// Classes given a depth so far: one that empties is set to 0, not left at its last value.
    classes: Mutex<BTreeSet<String>>,
    in_flight: Gauge,
    model_switches: Counter,
    /// The model key of the last job started that had models (0: none yet).
    last_models: AtomicU64,
    frees: Counter,
    oom_retries: Counter,
    restarts: Counter,
    up: Gauge,
    vram_used: Gauge,
    vram_total: Gauge,
    job_vram_peak: Histogram,
    claims: Counter,
    takeovers: Counter,
}

/// Seconds a job may wait in the queue: a tenth of a second to two hours.
const WAIT_BUCKETS: [f64; 13] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
/// Seconds a prompt may execute: a tenth of a second (cached) to an hour (video).
const EXECUTION_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];
/// Seconds loading models may take: from a page-cached file to a cold network disk.
const LOAD_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

impl Metrics {
    /// Metrics for the daemon of GPU `gpu` (the constant label `gpu` on every series).
    pub fn new(gpu: u32) -> Metrics {
        let mut r = Registry::with_prefix_and_labels(
            "comfyd",
            [(Cow::Borrowed("gpu"), Cow::Owned(gpu.to_string()))].into_iter(),
        );
        let f = Families {
            jobs: Family::default(),
            queue_wait: Histogram::new(WAIT_BUCKETS),
            execution: Histogram::new(EXECUTION_BUCKETS),
            model_load: Histogram::new(LOAD_BUCKETS),
            queue_depth: Family::default(),
            classes: Mutex::default(),
            in_flight: Gauge::default(),
            model_switches: Counter::default(),
            last_models: AtomicU64::new(0),
            frees: Counter::default(),
            oom_retries: Counter::default(),
            restarts: Counter::default(),
            up: Gauge::default(),
            vram_used: Gauge::default(),
            vram_total: Gauge::default(),
            // 256 MiB to 128 GiB.
            job_vram_peak: Histogram::new(exponential_buckets(f64::from(1u32 << 28), 2.0, 10)),
            claims: Counter::default(),
            takeovers: Counter::default(),
            registry: Registry::default(),
        };
        r.register(
            "jobs",
            "Jobs finished by this daemon, by workflow and outcome",
            f.jobs.clone(),
        );
        r.register_with_unit(
            "queue_wait",
            "How long jobs waited, as this daemon saw them, before it claimed them",
            Unit::Seconds,
            f.queue_wait.clone(),
        );
        r.register_with_unit(
            "execution",
            "ComfyUI's execution time of the jobs done",
            Unit::Seconds,
            f.execution.clone(),
        );
        r.register_with_unit(
            "model_load",
            "Execution time of the loader nodes of a job that were not cached",
            Unit::Seconds,
            f.model_load.clone(),
        );
        r.register(
            "queue_depth",
            "Jobs waiting to run, by scheduling class",
            f.queue_depth.clone(),
        );
        r.register(
            "prompts_in_flight",
            "Prompts of this daemon at ComfyUI, queued or executing",
            f.in_flight.clone(),
        );
        r.register(
            "model_switches",
            "Jobs started whose model set differs from the one of the job before",
            f.model_switches.clone(),
        );
        r.register(
            "free_calls",
            "Calls to ComfyUI's POST /free",
            f.frees.clone(),
        );
        r.register(
            "oom_retries",
            "Jobs run again after ComfyUI ran out of memory",
            f.oom_retries.clone(),
        );
        r.register(
            "comfyui_restarts",
            "Times the supervised ComfyUI was started again",
            f.restarts.clone(),
        );
        r.register(
            "comfyui_up",
            "1 when ComfyUI answered the last call made to it, else 0",
            f.up.clone(),
        );
        r.register_with_unit(
            "vram_used",
            "VRAM in use on the GPU (every process), as last read through NVML or ComfyUI's /system_stats (a CPU ComfyUI reports RAM)",
            Unit::Bytes,
            f.vram_used.clone(),
        );
        r.register_with_unit(
            "vram_total",
            "VRAM of the GPU, as last read",
            Unit::Bytes,
            f.vram_total.clone(),
        );
        r.register_with_unit(
            "job_vram_peak",
            "Highest VRAM in use while a job executed",
            Unit::Bytes,
            f.job_vram_peak.clone(),
        );
        r.register(
            "claims",
            "Jobs claimed from the job store",
            f.claims.clone(),
        );
        r.register(
            "takeovers",
            "Jobs taken over from a daemon whose lease went stale",
            f.takeovers.clone(),
        );
        Metrics(Some(Arc::new(Families { registry: r, ..f })))
    }

    /// Metrics that record nothing (no `--metrics`).
    pub fn disabled() -> Metrics {
        Metrics(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Every family in the Prometheus text format (empty when disabled).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(f) = &self.0 {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &f.registry);
        }
        out
    }

    /// A job finished here; `workflow` is the workflow's name, or [`UNKNOWN_WORKFLOW`].
    pub fn job_finished(&self, workflow: &str, outcome: Outcome) {
        if let Some(f) = &self.0 {
            f.jobs
                .get_or_create(&JobLabels {
                    workflow: workflow.to_owned(),
                    outcome: outcome.as_str(),
                })
                .inc();
        }
    }

    /// A job was claimed after waiting this long.
    pub fn claimed(&self, waited: Duration) {
        if let Some(f) = &self.0 {
            f.claims.inc();
            f.queue_wait.observe(waited.as_secs_f64());
        }
    }

    /// A job was taken over from a stale lease.
    pub fn took_over(&self) {
        if let Some(f) = &self.0 {
            f.takeovers.inc();
        }
    }

    /// A job started whose model set has this key (`Workflows::model_key`, 0 for none): a
    /// different key from the last job's with models is a model switch.
    pub fn job_started(&self, model_key: u64) {
        if let Some(f) = &self.0
            && model_key != 0
        {
            let last = f.last_models.swap(model_key, Ordering::Relaxed);
            if is_switch(last, model_key) {
                f.model_switches.inc();
            }
        }
    }

    /// A job done: ComfyUI's execution time, its model-load time when a loader ran.
    pub fn job_done(&self, execution: Duration, model_load: Option<Duration>) {
        if let Some(f) = &self.0 {
            f.execution.observe(execution.as_secs_f64());
            if let Some(d) = model_load {
                f.model_load.observe(d.as_secs_f64());
            }
        }
    }

    /// A job done, from its manifest: its workflow, execution time, model-load time (the
    /// timings of `loaders`, its workflow's loader nodes) and VRAM peak when it was sampled.
    pub fn job_manifest(&self, m: &Manifest, loaders: &[&str]) {
        if !self.is_enabled() {
            return;
        }
        self.job_finished(&m.workflow.name, Outcome::Done);
        self.job_done(
            Duration::from_millis(m.timings.execution_ms),
            model_load_time(loaders, &m.timings.nodes, &m.cached_nodes),
        );
        if let Some(peak) = m.gpu.vram_peak_used_bytes {
            self.job_vram_peak(peak);
        }
    }

    /// Jobs waiting per class, as the daemon knows them now; a class not given is empty.
    pub fn queue_depth(&self, by_class: &BTreeMap<String, usize>) {
        let Some(f) = &self.0 else { return };
        let Ok(mut known) = f.classes.lock() else {
            return;
        };
        for (class, n) in by_class {
            known.insert(class.clone());
            f.queue_depth
                .get_or_create(&ClassLabels {
                    class: class.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        for class in known.iter().filter(|c| !by_class.contains_key(*c)) {
            f.queue_depth
                .get_or_create(&ClassLabels {
                    class: class.clone(),
                })
                .set(0);
        }
    }

    /// How many of this daemon's prompts are at ComfyUI now.
    pub fn prompts_in_flight(&self, n: usize) {
        if let Some(f) = &self.0 {
            f.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// `POST /free` was called.
    pub fn free_called(&self) {
        if let Some(f) = &self.0 {
            f.frees.inc();
        }
    }

    /// A job is run again after an out-of-memory error.
    pub fn oom_retry(&self) {
        if let Some(f) = &self.0 {
            f.oom_retries.inc();
        }
    }

    /// The supervised ComfyUI was started again.
    pub fn comfyui_restarted(&self) {
        if let Some(f) = &self.0 {
            f.restarts.inc();
        }
    }

    /// Whether the last call to ComfyUI was answered.
    pub fn comfyui_up(&self, up: bool) {
        if let Some(f) = &self.0 {
            f.up.set(i64::from(up));
        }
    }

    /// The GPU's memory as just read.
    pub fn vram(&self, used_bytes: u64, total_bytes: u64) {
        if let Some(f) = &self.0 {
            f.vram_used
                .set(i64::try_from(used_bytes).unwrap_or(i64::MAX));
            f.vram_total
                .set(i64::try_from(total_bytes).unwrap_or(i64::MAX));
        }
    }

    /// The highest VRAM in use while a job executed.
    pub fn job_vram_peak(&self, bytes: u64) {
        if let Some(f) = &self.0 {
            // Exact below 2^53 bytes (8 PiB).
            f.job_vram_peak.observe(bytes as f64);
        }
    }
}

/// Whether starting a job with models `next` after the last job with models `last` (0: none
/// yet) is a model switch. The first set loaded is not a switch: nothing was unloaded for it.
pub fn is_switch(last: u64, next: u64) -> bool {
    last != 0 && next != 0 && last != next
}

/// The time a job spent in loader nodes (`loaders`, node ids) that ComfyUI did not serve from
/// its cache; none when no loader ran.
pub fn model_load_time(
    loaders: &[&str],
    nodes: &[NodeTiming],
    cached: &[String],
) -> Option<Duration> {
    let ran: Vec<&NodeTiming> = nodes
        .iter()
        .filter(|n| loaders.contains(&n.node.as_str()) && !cached.contains(&n.node))
        .collect();
    if ran.is_empty() {
        return None;
    }
    Some(Duration::from_millis(ran.iter().map(|n| n.ms).sum()))
}

/// `--metrics ADDR`: a bare port listens on loopback (127.0.0.1); `HOST:PORT` where it says.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| format!("`{t}` is not a port (0 to 65535)"));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad =
        || format!("`{t}` is not PORT or HOST:PORT (like `9400`, `127.0.0.1:9400` or `[::]:9400`)");
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    t.to_socket_addrs()
        .map_err(|e| format!("`{t}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{t}`: the host has no address"))
}

/// An HTTP server running in the background (the metrics endpoint, `comfyd serve`); dropping
/// it stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub(crate) fn new(addr: SocketAddr, task: tokio::task::JoinHandle<()>) -> Server {
        Server { addr, task }
    }

    /// Where it listens (the port chosen when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `addr`.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<Server> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    )],
                    m.encode(),
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(Server::new(addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of a family's samples (not its `# HELP`/`# TYPE` lines).
    fn samples(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn counters_end_in_total_and_carry_their_labels_and_the_gpu() {
        let m = Metrics::new(3);
        m.job_finished("txt2img", Outcome::Done);
        m.job_finished("txt2img", Outcome::Done);
        m.job_finished("txt2img", Outcome::of_failure("timeout"));
        m.job_finished(UNKNOWN_WORKFLOW, Outcome::of_failure("unknown-workflow"));
        let text = m.encode();
        assert!(
            text.contains("# HELP comfyd_jobs_total Jobs finished by this daemon, by workflow and outcome.\n# TYPE comfyd_jobs_total counter\n"),
            "{text}"
        );
        let mut jobs = samples(&text, "comfyd_jobs_total");
        jobs.sort();
        assert_eq!(
            jobs,
            [
                r#"comfyd_jobs_total{gpu="3",workflow="(unknown)",outcome="failed"} 1"#,
                r#"comfyd_jobs_total{gpu="3",workflow="txt2img",outcome="done"} 2"#,
                r#"comfyd_jobs_total{gpu="3",workflow="txt2img",outcome="timeout"} 1"#,
            ]
        );
        assert!(
            text.contains("comfyd_claims_total{gpu=\"3\"} 0\n"),
            "{text}"
        );
        // Prometheus text, not OpenMetrics: no `# EOF`, no `# UNIT`.
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn histograms_have_their_unit_in_the_name_and_cumulative_buckets() {
        let m = Metrics::new(0);
        m.claimed(Duration::from_millis(300));
        m.claimed(Duration::from_secs(40));
        m.job_done(Duration::from_secs(3), Some(Duration::from_millis(1500)));
        m.job_done(Duration::from_millis(50), None);
        m.job_vram_peak(3 << 30);
        let text = m.encode();
        assert!(
            text.contains("# TYPE comfyd_queue_wait_seconds histogram\n"),
            "{text}"
        );
        let wait = samples(&text, "comfyd_queue_wait_seconds");
        assert!(wait.contains(&r#"comfyd_queue_wait_seconds_bucket{gpu="0",le="0.1"} 0"#.into()));
        assert!(wait.contains(&r#"comfyd_queue_wait_seconds_bucket{gpu="0",le="0.5"} 1"#.into()));
        assert!(wait.contains(&r#"comfyd_queue_wait_seconds_bucket{gpu="0",le="60"} 2"#.into()));
        assert!(wait.contains(&r#"comfyd_queue_wait_seconds_bucket{gpu="0",le="+Inf"} 2"#.into()));
        assert!(wait.contains(&r#"comfyd_queue_wait_seconds_count{gpu="0"} 2"#.into()));
        assert!(wait.contains(&r#"comfyd_queue_wait_seconds_sum{gpu="0"} 40.3"#.into()));
        assert!(text.contains("comfyd_execution_seconds_count{gpu=\"0\"} 2\n"));
        assert!(text.contains("comfyd_model_load_seconds_count{gpu=\"0\"} 1\n"));
        assert!(text.contains("comfyd_model_load_seconds_sum{gpu=\"0\"} 1.5\n"));
        assert!(
            text.contains(
                "comfyd_job_vram_peak_bytes_bucket{gpu=\"0\",le=\"2.147483648e+09\"} 0\n"
            )
        );
        assert!(
            text.contains(
                "comfyd_job_vram_peak_bytes_bucket{gpu=\"0\",le=\"4.294967296e+09\"} 1\n"
            )
        );
        assert_eq!(text.matches("comfyd_claims_total{gpu=\"0\"} 2").count(), 1);
    }

    #[test]
    fn gauges_follow_the_last_value_and_an_emptied_class_goes_to_zero() {
        let m = Metrics::new(0);
        m.queue_depth(&[("image".to_owned(), 120), ("video".to_owned(), 3)].into());
        m.queue_depth(&[("image".to_owned(), 7)].into());
        m.prompts_in_flight(2);
        m.comfyui_up(true);
        m.vram(1 << 30, 24 << 30);
        let text = m.encode();
        assert!(
            text.contains("comfyd_queue_depth{gpu=\"0\",class=\"image\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("comfyd_queue_depth{gpu=\"0\",class=\"video\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("comfyd_prompts_in_flight{gpu=\"0\"} 2\n"));
        assert!(text.contains("comfyd_comfyui_up{gpu=\"0\"} 1\n"));
        assert!(text.contains("comfyd_vram_used_bytes{gpu=\"0\"} 1073741824\n"));
        assert!(text.contains("comfyd_vram_total_bytes{gpu=\"0\"} 25769803776\n"));
        m.comfyui_up(false);
        assert!(m.encode().contains("comfyd_comfyui_up{gpu=\"0\"} 0\n"));
    }

    #[test]
    fn a_model_switch_is_a_change_between_two_known_model_sets() {
        assert!(!is_switch(0, 7), "the first set loaded");
        assert!(!is_switch(7, 7));
        assert!(is_switch(7, 9));
        assert!(!is_switch(7, 0), "a job without models switches nothing");
        let m = Metrics::new(0);
        for key in [5, 5, 0, 5, 6, 0, 6, 5] {
            m.job_started(key);
        }
        assert!(
            m.encode()
                .contains("comfyd_model_switches_total{gpu=\"0\"} 2\n")
        );
    }

    #[test]
    fn model_load_time_counts_loader_nodes_that_ran() {
        let t = |node: &str, ms| NodeTiming {
            node: node.into(),
            ms,
        };
        let nodes = [t("4", 1200), t("10", 300), t("3", 5000)];
        assert_eq!(
            model_load_time(&["4", "10"], &nodes, &[]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            model_load_time(&["4", "10"], &nodes, &["10".into()]),
            Some(Duration::from_millis(1200))
        );
        // Served from cache: it did not run, it has no timing.
        assert_eq!(
            model_load_time(&["4"], &[t("3", 5000)], &["4".into()]),
            None
        );
        assert_eq!(model_load_time(&[], &nodes, &[]), None);
    }

    #[test]
    fn a_disabled_handle_records_and_encodes_nothing() {
        let m = Metrics::disabled();
        m.job_finished("x", Outcome::Done);
        m.free_called();
        assert!(!m.is_enabled());
        assert_eq!(m.encode(), "");
    }

    #[test]
    fn a_bare_port_is_loopback_and_host_port_is_what_it_says() {
        assert_eq!(
            parse_addr("9400"),
            Ok("127.0.0.1:9400".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_addr("0.0.0.0:9400").map(|a| a.to_string()),
            Ok("0.0.0.0:9400".into())
        );
        assert_eq!(
            parse_addr("[::1]:9400").map(|a| a.to_string()),
            Ok("[::1]:9400".into())
        );
        assert!(
            parse_addr("localhost:9400").is_ok_and(|a| a.ip().is_loopback() && a.port() == 9400)
        );
        for bad in [
            "",
            "70000",
            "host",
            ":9400",
            "127.0.0.1:x",
            "http://127.0.0.1:9400",
        ] {
            let e = parse_addr(bad).err().unwrap_or_default();
            assert!(e.contains('`'), "{bad}: {e}");
        }
    }
}
