//! The `comfyd` command: parses arguments, sets up logging and signals, runs the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use comfyd::daemon::{self, Settings};

/// Run ComfyUI jobs dropped into a directory, one daemon per GPU.
#[derive(Parser)]
#[command(
    name = "comfyd",
    version,
    max_term_width = 100,
    after_help = "\
Drop job files into JOBS/inbox/ (write them elsewhere, then rename them in):

  workflow = \"txt2img\"
  [inputs]
  prompt = \"a white ceramic mug on a marble countertop\"

Each job file ends in JOBS/done/ (its outputs and manifest.json in OUTPUTS/ID/) or in
JOBS/failed/ with NAME.error.json saying why. `comfyd status --jobs JOBS` shows where things are.

Several daemons (one per GPU, on one machine or many sharing the folder) may watch one job
directory: each job runs once, on whichever daemon the scheduler gives it to.

Exit status: 0 all jobs done (or stopped by a signal), 1 some job failed (`run --until-idle`),
2 usage, configuration or set-up error."
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Draw no progress bar. By default `run` and `demo` draw one on a terminal (jobs ended of
    /// all known, the rate, the time left) below the log lines; none is drawn when stderr is
    /// not a terminal or with `--log-format json`.
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sim {
    Never,
    Auto,
    Always,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Watch a job directory and run its jobs against ComfyUI.
    ///
    /// Settings come from flags, else from `--config FILE` (or `comfyd.toml` in the current
    /// directory when there is one), else defaults.
    Run {
        /// A comfyd.toml with these settings (flags win over it).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The job directory (inbox/, queue/, done/, failed/, status/ are created in it).
        #[arg(long, value_name = "DIR")]
        jobs: Option<PathBuf>,
        /// The workflow repository (with its comfyc.toml).
        #[arg(long, value_name = "DIR")]
        workflows: Option<PathBuf>,
        /// Where job outputs go (default: `outputs/` beside the job directory).
        #[arg(long, value_name = "DIR")]
        outputs: Option<PathBuf>,
        /// Where file inputs (images, masks) are read from; paths in jobs are relative to it.
        #[arg(long, value_name = "DIR")]
        inputs: Option<PathBuf>,
        /// The ComfyUI server of this GPU [default: http://127.0.0.1:8188, or the `--port` of
        /// --comfy-cmd]. An `https://` server's certificate must be signed by an authority the
        /// system trusts, or by one in the PEM file named by `SSL_CERT_FILE`; a refused
        /// certificate stops the daemon.
        #[arg(long)]
        comfy_url: Option<String>,
        /// Start ComfyUI with this command and keep it running: restarted when it exits or a
        /// prompt stalls, stopped with the daemon; output appended to `logs/comfyui-gpu-N.log`
        /// beside the job directory. One string, split like a shell does:
        /// 'python main.py --port 8188 --cuda-device 0'. Wins over `[comfyui] command` in
        /// comfyd.toml [default: none, a ComfyUI someone else runs answers at --comfy-url].
        #[arg(long, value_name = "COMMAND")]
        comfy_cmd: Option<String>,
        /// An extra header on every request to ComfyUI and on its websocket handshake,
        /// `Name: value` (for example `--header 'Authorization: Bearer TOKEN'` for a proxy in
        /// front of it). Repeatable; added to `headers` of comfyd.toml. Values are never
        /// logged. Default: none.
        #[arg(long = "header", value_name = "NAME: VALUE")]
        header: Vec<String>,
        /// The GPU this daemon serves: its index, as ComfyUI's `--cuda-device` takes it, or its
        /// UUID (`GPU-...`, from `nvidia-smi -L`) [default: 0]. VRAM is read through NVML when
        /// the NVIDIA driver is there; otherwise from ComfyUI's /system_stats, and the log says so.
        #[arg(long, value_name = "N|UUID")]
        gpu: Option<String>,
        /// Before a job whose models differ from the last job's, free ComfyUI's memory
        /// (POST /free) when less VRAM than this is free: a share (`25%`, the default), a size
        /// (`6GiB`, `6000MB`), or `off`.
        #[arg(long, value_name = "SHARE|SIZE|off")]
        free_below: Option<String>,
        /// Run against a built-in ComfyUI simulator: `--sim` always, `--sim=auto` only when
        /// no ComfyUI answers at --comfy-url. Outputs are then placeholder images.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "always", default_value = "never")]
        sim: Sim,
        /// Exit when the inbox is empty and nothing runs.
        #[arg(long)]
        until_idle: bool,
        /// Jobs submitted to ComfyUI at once [default: 2]: the next is queued while one runs,
        /// so the GPU does not idle between jobs; 1 runs strictly one after another.
        #[arg(long, value_name = "N")]
        pipeline: Option<usize>,
        /// Seconds a job may run before it is interrupted.
        #[arg(long, value_name = "SECONDS")]
        job_timeout: Option<u64>,
        /// Seconds the running job gets to finish after SIGTERM/SIGINT before it is
        /// interrupted and let go for any daemon to run later [default: 30].
        #[arg(long, value_name = "SECONDS")]
        grace: Option<u64>,
        /// Seconds after which a silent daemon's lease is stale and its jobs are taken over
        /// [default: 30].
        #[arg(long, value_name = "SECONDS")]
        lease_ttl: Option<u64>,
        /// Milliseconds an inbox file must keep its size before it is taken [default: 500].
        #[arg(long, value_name = "MS")]
        settle_ms: Option<u64>,
        /// Seconds `inbox/ID.cancel` for an id no job file has stays before it is removed
        /// [default: 600].
        #[arg(long, value_name = "SECONDS")]
        cancel_expiry: Option<u64>,
        /// Megabytes that must stay free where outputs and the job folder are, for new jobs to
        /// be taken [default: 64]. Below it, jobs wait (nothing is failed).
        #[arg(long, value_name = "MB")]
        min_free_mb: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics. A bare port listens on loopback
        /// only (`9400` is 127.0.0.1:9400); `HOST:PORT` listens where it says (`0.0.0.0:9400`
        /// for every interface). Default: no metrics, nothing listens.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Try it: copy the example jobs into a fresh job directory and run them, against ComfyUI
    /// if one answers at --comfy-url, else against the built-in simulator (and say so).
    Demo {
        /// The workflow repository.
        #[arg(long, value_name = "DIR", default_value = "examples")]
        workflows: PathBuf,
        /// Job files to drop into the inbox.
        #[arg(long, value_name = "DIR", default_value = "examples/jobs")]
        jobs_from: PathBuf,
        /// Where the job directory and outputs go (replaced if it exists).
        #[arg(long, value_name = "DIR", default_value = "comfyd-demo")]
        dir: PathBuf,
        /// The ComfyUI to try first; the built-in simulator when none answers there.
        #[arg(long, default_value = "http://127.0.0.1:8188")]
        comfy_url: String,
    },
    /// Show the GPU as NVML reads it: name, UUID, driver, CUDA version, memory and load.
    ///
    /// Exits 1, saying why, when NVML cannot be read (no NVIDIA driver, no such GPU): then
    /// `comfyd run` takes its VRAM figures from ComfyUI's /system_stats instead.
    Gpu {
        /// The GPU: index or UUID.
        #[arg(long, value_name = "N|UUID", default_value = "0")]
        gpu: String,
        /// `human` or `json`.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Serve the workflows as a REST API (and a form page) over the job directory: runs
    /// are job files written into JOBS/inbox/ for the `comfyd run` daemons, read back from
    /// the store and the outputs. Docs at /openapi.json.
    Serve(comfyd::serve::Args),
    /// Show how many jobs wait, run, are done or failed, and what each daemon is doing.
    Status {
        /// The job directory [default: `jobs` from --config, or from `comfyd.toml` in the
        /// current directory].
        #[arg(long, value_name = "DIR")]
        jobs: Option<PathBuf>,
        /// A comfyd.toml to find the job directory in.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// `human` or `json`.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Print a shell completion script.
    ///
    /// Install for bash: `comfyd completions bash > ~/.local/share/bash-completion/completions/comfyd`;
    /// zsh: `comfyd completions zsh > ~/.zfunc/_comfyd` (with `~/.zfunc` in `fpath`);
    /// fish: `comfyd completions fish > ~/.config/fish/completions/comfyd.fish`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages: `comfyd.1` and one per subcommand (`comfyd-run.1`, ...).
    ///
    /// Install with `comfyd man --out ~/.local/share/man/man1`, then `man comfyd`. Without
    /// `--out`, the page of `comfyd` itself is printed.
    Man {
        /// Folder to write the pages into.
        #[arg(long, short, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("COMFYD_LOG").unwrap_or_else(|_| "info".into());
    // tungstenite traces the websocket handshake request verbatim, `--header` values (tokens)
    // included: never below info there, whatever COMFYD_LOG says (a directive also raises
    // the level: at `debug` it printed "Client handshake done." at every connection).
    let filter = match "tungstenite::handshake::client=info".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let ansi = tty && std::env::var_os("NO_COLOR").is_none();
    // Log lines go through the terminal, which keeps them clear of the progress bar.
    let terminal = comfyd::terminal::Terminal::new(
        tty && matches!(cli.log_format, LogFormat::Text) && !cli.no_progress,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(terminal.clone())
        .with_ansi(ansi);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match cli.command {
        Command::Completions { shell } => completions(shell),
        Command::Man { out } => man(out.as_deref()),
        Command::Status {
            jobs,
            config,
            format,
        } => {
            let jobs = match jobs {
                Some(j) => j,
                None => match config
                    .or_else(|| Some(PathBuf::from("comfyd.toml")).filter(|p| p.is_file()))
                {
                    Some(p) => match comfyd::config::FileConfig::load(&p) {
                        Ok(c) => match c.jobs {
                            Some(j) => j,
                            None => {
                                eprintln!(
                                    "error: {} names no job directory (`jobs = \"...\"`); give --jobs DIR",
                                    p.display()
                                );
                                return ExitCode::from(2);
                            }
                        },
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(2);
                        }
                    },
                    None => {
                        eprintln!(
                            "error: which job directory? give --jobs DIR, or --config FILE (or run where comfyd.toml is)"
                        );
                        return ExitCode::from(2);
                    }
                },
            };
            status(&jobs, format)
        }
        Command::Gpu { gpu, format } => show_gpu(&gpu, format),
        Command::Serve(args) => {
            let settings = match args.settings() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(runtime) = runtime() else {
                return ExitCode::from(2);
            };
            runtime.block_on(async {
                match comfyd::serve::start(settings).await {
                    Ok(_server) => {
                        wait_for_signal().await;
                        tracing::info!("stopping");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(2)
                    }
                }
            })
        }
        Command::Demo {
            workflows,
            jobs_from,
            dir,
            comfy_url,
        } => {
            let Some(runtime) = runtime() else {
                return ExitCode::from(2);
            };
            runtime.block_on(demo(workflows, jobs_from, dir, comfy_url, terminal))
        }
        Command::Run {
            config,
            jobs,
            workflows,
            outputs,
            inputs,
            comfy_url,
            comfy_cmd,
            header,
            gpu,
            free_below,
            sim,
            until_idle,
            pipeline,
            job_timeout,
            grace,
            lease_ttl,
            settle_ms,
            cancel_expiry,
            min_free_mb,
            metrics,
        } => {
            let config =
                config.or_else(|| Some(PathBuf::from("comfyd.toml")).filter(|p| p.is_file()));
            let file = match &config {
                Some(p) => match comfyd::config::FileConfig::load(p) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => comfyd::config::FileConfig::default(),
            };
            let policy = file.policy();
            let config_file = config
                .as_deref()
                .unwrap_or(std::path::Path::new("comfyd.toml"));
            let headers = match file.headers(&header, config_file) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let (Some(jobs), Some(workflows)) = (jobs.or(file.jobs), workflows.or(file.workflows))
            else {
                eprintln!(
                    "error: say where the job directory and the workflows are: --jobs DIR --workflows DIR (or in comfyd.toml)"
                );
                return ExitCode::from(2);
            };
            let supervised = match comfyd::supervisor::Config::resolve(
                file.comfyui.as_ref(),
                comfy_cmd.as_deref(),
                &workflows,
            ) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let url = comfy_url.or(file.comfy_url).unwrap_or_else(|| {
                let port = supervised
                    .as_ref()
                    .and_then(|c| comfyd::supervisor::command_port(&c.command));
                format!("http://127.0.0.1:{}", port.unwrap_or(8188))
            });
            let mut settings = Settings::new(jobs, workflows, url);
            settings.comfyui = supervised;
            settings.headers = headers;
            if let Some(o) = outputs.or(file.outputs) {
                settings.outputs = o;
            }
            settings.inputs = inputs.or(file.inputs);
            let selector = match gpu
                .or(file.gpu.as_ref().map(|g| g.text()))
                .map_or(Ok(comfyd::gpu::Selector::Index(0)), |t| {
                    comfyd::gpu::Selector::parse(&t)
                }) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: --gpu: {e}");
                    return ExitCode::from(2);
                }
            };
            settings.spend = match file.spend.policy() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            settings.memory = match file.memory.policy(free_below.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: free_below: {e}");
                    return ExitCode::from(2);
                }
            };
            settings.until_idle = until_idle;
            settings.pipeline = pipeline.or(file.pipeline).unwrap_or(2).max(1);
            settings.job_timeout = job_timeout.or(file.job_timeout).map(Duration::from_secs);
            settings.grace = Duration::from_secs(grace.or(file.grace).unwrap_or(30));
            settings.lease_ttl =
                Duration::from_secs(lease_ttl.or(file.lease_ttl).unwrap_or(30).max(2));
            if let Some(ms) = settle_ms.or(file.settle_ms) {
                settings.settle = Duration::from_millis(ms);
            }
            if let Some(s) = cancel_expiry.or(file.cancel_expiry) {
                settings.cancel_expiry = Duration::from_secs(s);
            }
            if let Some(mb) = min_free_mb.or(file.min_free_mb) {
                settings.min_free_bytes = mb << 20;
            }
            settings.policy = policy;
            let metrics_addr = match (metrics, file.metrics) {
                (Some(text), _) => {
                    Some(comfyd::metrics::parse_addr(&text).map_err(|e| format!("--metrics {e}")))
                }
                (None, Some(text)) => Some(comfyd::metrics::parse_addr(&text).map_err(|e| {
                    let file = config
                        .as_deref()
                        .unwrap_or(std::path::Path::new("comfyd.toml"));
                    format!("{}: `metrics`: {e}", file.display())
                })),
                (None, None) => None,
            };
            let metrics_addr = match metrics_addr.transpose() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if metrics_addr.is_some() {
                settings.metrics = comfyd::metrics::Metrics::new(settings.gpu);
            }
            let Some(runtime) = runtime() else {
                return ExitCode::from(2);
            };
            runtime.block_on(run(settings, selector, sim, metrics_addr, terminal))
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Whether a ComfyUI answers at `url` (within a couple of seconds). A server whose
/// certificate is refused is there: the daemon then stops saying why, rather than simulate.
async fn comfy_answers(url: &str, headers: &comfyd::client::Headers) -> bool {
    let timeouts = comfyd::client::Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(3),
        ..Default::default()
    };
    match comfyd::client::Client::with_headers(url, timeouts, headers.clone()) {
        Ok(c) => matches!(
            c.system_stats().await,
            Ok(_) | Err(comfyd::client::ClientError::Tls { .. })
        ),
        Err(_) => false,
    }
}

async fn demo(
    workflows: PathBuf,
    jobs_from: PathBuf,
    dir: PathBuf,
    comfy_url: String,
    terminal: comfyd::terminal::Terminal,
) -> ExitCode {
    let prepare = || -> std::io::Result<usize> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let inbox = dir.join("jobs/inbox");
        std::fs::create_dir_all(&inbox)?;
        let mut n = 0;
        for e in std::fs::read_dir(&jobs_from)? {
            let p = e?.path();
            if p.is_file()
                && let Some(name) = p.file_name()
            {
                std::fs::copy(&p, inbox.join(name))?;
                n += 1;
            }
        }
        Ok(n)
    };
    let files = match prepare() {
        Ok(n) => n,
        Err(e) => {
            eprintln!(
                "error: preparing {} from {}: {e}",
                dir.display(),
                jobs_from.display()
            );
            return ExitCode::from(2);
        }
    };
    let sim = if comfy_answers(&comfy_url, &Default::default()).await {
        Sim::Never
    } else {
        Sim::Always
    };
    if sim == Sim::Always {
        eprintln!(
            "No ComfyUI answers at {comfy_url}: running against comfyd's built-in ComfyUI simulator."
        );
        eprintln!(
            "Its images are placeholders; start ComfyUI (or pass --comfy-url) to run the jobs for real."
        );
    } else {
        eprintln!("Running against the ComfyUI at {comfy_url}.");
    }
    eprintln!(
        "Dropped {files} job files from {} into {}.",
        jobs_from.display(),
        dir.join("jobs/inbox").display()
    );
    let mut settings = Settings::new(dir.join("jobs"), workflows, comfy_url);
    settings.outputs = dir.join("outputs");
    settings.until_idle = true;
    settings.settle = Duration::ZERO;
    let code = run(
        settings,
        comfyd::gpu::Selector::Index(0),
        sim,
        None,
        terminal,
    )
    .await;
    println!();
    status(&dir.join("jobs"), Format::Human);
    println!(
        "\nOutputs and manifests: {}/<job id>/ (manifest.json lists each file with its sha256)",
        dir.join("outputs").display()
    );
    println!(
        "Failure reasons: {}/*.error.json",
        dir.join("jobs/failed").display()
    );
    code
}

async fn run(
    mut settings: Settings,
    selector: comfyd::gpu::Selector,
    sim: Sim,
    metrics_addr: Option<std::net::SocketAddr>,
    terminal: comfyd::terminal::Terminal,
) -> ExitCode {
    // The tests' knob: how often a long job logs its progress.
    if let Some(text) = std::env::var_os("COMFYD_PROGRESS_LOG_MS") {
        match text.to_str().and_then(|t| t.parse::<u64>().ok()) {
            Some(ms) => settings.progress_log_every = Duration::from_millis(ms.max(1)),
            None => {
                eprintln!(
                    "error: COMFYD_PROGRESS_LOG_MS={}: not a number of milliseconds",
                    text.to_string_lossy()
                );
                return ExitCode::from(2);
            }
        }
    }
    let use_sim = match sim {
        Sim::Never => false,
        Sim::Always => true,
        Sim::Auto => {
            let down = !comfy_answers(&settings.comfy_url, &settings.headers).await;
            if down {
                tracing::warn!(url = %settings.comfy_url, "no ComfyUI answers there; using the built-in simulator");
            }
            down
        }
    };
    let _sim = if use_sim {
        match start_sim(&settings).await {
            Ok((s, dir)) => {
                settings.comfy_url = s.url();
                settings.simulated = true;
                tracing::warn!(url = %settings.comfy_url, "trial mode: jobs run against the built-in ComfyUI simulator, not a real ComfyUI");
                Some((s, dir))
            }
            Err(e) => {
                eprintln!("error: cannot start the simulator: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    if let comfyd::gpu::Selector::Index(i) = selector {
        settings.gpu = i;
    }
    if use_sim {
        tracing::info!("the simulator has no GPU: VRAM figures come from its /system_stats");
    } else {
        match comfyd::gpu::Nvml::open(&selector) {
            Ok(nvml) => {
                use comfyd::gpu::Gpu;
                let id = nvml.identity();
                tracing::info!(
                    index = id.index,
                    name = id.name.as_deref().unwrap_or("?"),
                    uuid = id.uuid.as_deref().unwrap_or("?"),
                    driver = id.driver_version.as_deref().unwrap_or("?"),
                    cuda = id.cuda_version.as_deref().unwrap_or("?"),
                    "GPU read through NVML"
                );
                settings.gpu = id.index;
                settings.probe = Some(std::sync::Arc::new(nvml));
            }
            Err(reason) => {
                if let comfyd::gpu::Selector::Uuid(u) = &selector {
                    eprintln!(
                        "error: --gpu {u}: a GPU named by its UUID is found through NVML, and {reason}; give its index instead"
                    );
                    return ExitCode::from(2);
                }
                tracing::info!(%reason, "no NVML: VRAM figures come from ComfyUI's /system_stats");
            }
        }
    }
    // Bound before the daemon starts, so a port in use is a set-up error, not a silent gap.
    let _metrics = match metrics_addr {
        Some(addr) => match comfyd::metrics::serve(addr, settings.metrics.clone()).await {
            Ok(server) => {
                tracing::info!(addr = %server.addr(), "metrics at http://{}/metrics", server.addr());
                Some(server)
            }
            Err(e) => {
                eprintln!("error: --metrics {addr}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: no new jobs; the running one may finish");
        let _ = tx.send(true);
    });
    if terminal.has_bar() {
        let (counts, follow) = tokio::sync::watch::channel(Default::default());
        settings.counts = Some(counts);
        tokio::spawn(terminal.clone().follow(follow));
    }
    let result = daemon::run(settings, rx).await;
    terminal.finish();
    match result {
        Ok(s) => {
            tracing::info!(
                files_done = s.files_done,
                files_failed = s.files_failed,
                jobs_done = s.jobs_done,
                jobs_failed = s.jobs_failed,
                jobs_skipped = s.jobs_skipped,
                jobs_released = s.jobs_released,
                "stopped"
            );
            if s.jobs_failed > 0 || s.files_failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The simulator, with the workflow repository's catalogue and declared models.
async fn start_sim(settings: &Settings) -> Result<(comfy_sim::Sim, PathBuf), String> {
    let config_text = std::fs::read_to_string(settings.workflows.join("comfyc.toml"))
        .map_err(|e| format!("comfyc.toml: {e}"))?;
    let config: comfyc::definition::RepoConfig =
        toml::from_str(&config_text).map_err(|e| format!("comfyc.toml: {}", e.message()))?;
    let cat_path = settings.workflows.join(&config.catalogue);
    let catalogue = serde_json::from_str(
        &std::fs::read_to_string(&cat_path).map_err(|e| format!("{}: {e}", cat_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", cat_path.display()))?;
    let root = std::env::temp_dir().join(format!("comfyd-sim-{}", std::process::id()));
    let mut sim_config = comfy_sim::Config::new(catalogue, &root);
    for m in &config.models {
        sim_config
            .models
            .entry(m.get_ref().folder.clone())
            .or_default()
            .push(m.get_ref().name.clone());
    }
    let sim = comfy_sim::start(sim_config)
        .await
        .map_err(|e| e.to_string())?;
    Ok((sim, root))
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "comfyd", &mut buf);
    print_out(&buf)
}

/// `comfyd.1` and a page per subcommand, named as git names its own (`comfyd-run.1`).
fn man(dir: Option<&std::path::Path>) -> ExitCode {
    use clap::CommandFactory;
    let all = comfyc::manpages::render(Cli::command());
    let Some(dir) = dir else {
        return print_out(&all[0].1);
    };
    if let Err(e) = comfyc::manpages::write(dir, &all) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    eprintln!("wrote {} man pages into {}", all.len(), dir.display());
    ExitCode::SUCCESS
}

/// Writes to stdout; a closed pipe ends the command quietly.
fn print_out(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            ExitCode::from(2)
        }
    }
}

fn status(jobs: &std::path::Path, format: Format) -> ExitCode {
    match comfyd::status::read(jobs) {
        Ok(overview) => {
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&overview).unwrap_or_default()
                );
            } else {
                print!("{}", overview.human());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn show_gpu(gpu: &str, format: Format) -> ExitCode {
    use comfyd::gpu::{Gpu, Nvml, Selector};
    let selector = match Selector::parse(gpu) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --gpu: {e}");
            return ExitCode::from(2);
        }
    };
    let nvml = match Nvml::open(&selector) {
        Ok(n) => n,
        Err(reason) => {
            eprintln!("no NVML: {reason}");
            return ExitCode::from(1);
        }
    };
    let id = nvml.identity();
    let sample = nvml.sample();
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "source": nvml.source(),
                "index": id.index,
                "name": id.name,
                "uuid": id.uuid,
                "driver_version": id.driver_version,
                "cuda_version": id.cuda_version,
                "vram_total_bytes": sample.map(|s| s.total).or(id.total_bytes),
                "vram_used_bytes": sample.map(|s| s.used),
                "vram_free_bytes": sample.map(|s| s.free),
                "utilization_percent": sample.and_then(|s| s.utilization),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Human => {
            let size = comfyd::memory::size;
            println!(
                "GPU {}: {} ({})",
                id.index,
                id.name.as_deref().unwrap_or("?"),
                id.uuid.as_deref().unwrap_or("?")
            );
            println!(
                "driver {}, CUDA {}",
                id.driver_version.as_deref().unwrap_or("?"),
                id.cuda_version.as_deref().unwrap_or("?")
            );
            match sample {
                Some(s) => println!(
                    "memory: {} used, {} free of {}; utilisation {}",
                    size(s.used),
                    size(s.free),
                    size(s.total),
                    s.utilization.map_or("?".into(), |u| format!("{u}%"))
                ),
                None => println!("memory: not readable"),
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of every subcommand says what it does.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "comfyd", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
