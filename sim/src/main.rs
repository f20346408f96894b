//! `comfy-sim`: runs the simulator as a process, for benchmarks and manual poking.
//!
//! Parses arguments, starts the library's server, prints its URL and runs until Ctrl-C. Logs go
//! to stderr, coloured only on a terminal; the timeline is not kept (no one could read it).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use comfy_sim::{Config, Memory, Protocol, Timing};

/// `--protocol`: which server's behaviour.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// ComfyUI 0.3.64, as recorded in `shared/comfyui/`.
    #[value(name = "0.3")]
    Recorded,
    /// ComfyUI as released in 2026 (`shared/comfyui/NEWER.md`).
    #[value(name = "2026")]
    Y2026,
}

/// A ComfyUI protocol simulator (0.3.64 as recorded, or the 2026 releases).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on, on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8188)]
    port: u16,
    /// An `/object_info` document [default: the recorded one in the shared folder].
    #[arg(long, value_name = "FILE")]
    catalogue: Option<PathBuf>,
    /// Where `input/`, `output/` and `temp/` live [default: a new temporary folder].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Execution time of every node, in milliseconds.
    #[arg(long, default_value_t = 0)]
    node_ms: u64,
    /// Time to load a model, in milliseconds.
    #[arg(long, default_value_t = 0)]
    model_load_ms: u64,
    /// Which ComfyUI to behave like. `0.3`: ComfyUI 0.3.64 as recorded. `2026`: the 2026
    /// releases: a client's `prompt_id` must be a canonical lowercase UUID (else 400
    /// `invalid_prompt_id`), `/api/jobs` lists jobs and `POST /api/jobs/{id}/cancel` cancels
    /// one, SaveVideo/SaveWEBM list their file under `images` with `animated`, LoadImage lists
    /// its file as type `input`, and subgraph nodes (`OUTER:INNER` ids) name `OUTER` as their
    /// `display_node`.
    #[arg(long, value_enum, default_value = "0.3", hide_possible_values = true)]
    protocol: ProtocolArg,
    /// A model the server has, as `FOLDER/NAME` (`checkpoints/sd15.safetensors`); repeatable.
    #[arg(long = "model", value_name = "FOLDER/NAME")]
    models: Vec<String>,
    /// Simulate a CUDA GPU with this much memory, in MiB. Loaded models stay resident until
    /// `POST /free` unloads them; a load that does not fit fails the prompt with torch's
    /// out-of-memory error, and `/system_stats` reports a `cuda` device with these figures.
    /// [default: none, a CPU device that never runs out of memory]
    #[arg(long, value_name = "MB", help_heading = "GPU memory model")]
    vram_mb: Option<u64>,
    /// VRAM one model file takes once loaded, as `NAME=MB` (`big.safetensors=6000`);
    /// repeatable. Other models take `--default-model-mb`. Needs `--vram-mb`.
    #[arg(
        long = "model-mb",
        value_name = "NAME=MB",
        requires = "vram_mb",
        help_heading = "GPU memory model"
    )]
    model_mb: Vec<String>,
    /// VRAM a model not named by `--model-mb` takes, in MiB. Needs `--vram-mb`.
    #[arg(
        long,
        value_name = "MB",
        default_value_t = 2048,
        requires = "vram_mb",
        help_heading = "GPU memory model"
    )]
    default_model_mb: u64,
    /// Activation memory a prompt holds while it runs, on top of its models, in MiB: taken at
    /// its first model load or sampler, given back when it ends. Needs `--vram-mb`.
    #[arg(
        long,
        value_name = "MB",
        default_value_t = 1024,
        requires = "vram_mb",
        help_heading = "GPU memory model"
    )]
    working_mb: u64,
    /// VRAM leaked by every prompt run, in MiB: no `/free` gives it back, only a restart of
    /// the process. Needs `--vram-mb`.
    #[arg(
        long,
        value_name = "MB",
        default_value_t = 0,
        requires = "vram_mb",
        help_heading = "GPU memory model"
    )]
    leak_mb: u64,
}

/// MiB to bytes, or an error naming the flag.
fn mib(flag: &str, value: u64) -> Result<u64, String> {
    value
        .checked_mul(1024 * 1024)
        .ok_or_else(|| format!("`{flag} {value}` is too large"))
}

/// The memory model the flags describe, if `--vram-mb` is given.
fn memory(args: &Args) -> Result<Option<Memory>, String> {
    let Some(vram) = args.vram_mb else {
        return Ok(None);
    };
    let mut model_bytes = BTreeMap::new();
    for given in &args.model_mb {
        let parsed = given
            .rsplit_once('=')
            .filter(|(name, _)| !name.is_empty())
            .and_then(|(name, mb)| Some((name, mb.trim().parse::<u64>().ok()?)));
        let Some((name, mb)) = parsed else {
            return Err(format!(
                "`--model-mb {given}` is not `NAME=MB`\nhelp: a model file name and its size in MiB, like `big.safetensors=6000`"
            ));
        };
        model_bytes.insert(name.to_owned(), mib("--model-mb", mb)?);
    }
    Ok(Some(Memory {
        vram_bytes: mib("--vram-mb", vram)?,
        model_bytes,
        default_model_bytes: mib("--default-model-mb", args.default_model_mb)?,
        leak_bytes_per_prompt: mib("--leak-mb", args.leak_mb)?,
        working_bytes: mib("--working-mb", args.working_mb)?,
    }))
}

/// The recorded catalogue: `$COMFYC_SHARED/comfyui/object_info.json`, or the `shared/` folder
/// beside the repository this binary was built from.
fn default_catalogue() -> Option<PathBuf> {
    let shared = std::env::var_os("COMFYC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path = shared.join("comfyui/object_info.json");
    path.is_file().then_some(path)
}

fn config(args: Args) -> Result<Config, String> {
    let memory = memory(&args)?;
    let path = match args.catalogue.or_else(default_catalogue) {
        Some(path) => path,
        None => {
            return Err(
                "no catalogue found\nhelp: pass `--catalogue FILE` (an `/object_info` document)"
                    .to_owned(),
            );
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let catalogue = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is not JSON: {e}", path.display()))?;
    let root = args
        .root
        .unwrap_or_else(|| std::env::temp_dir().join(format!("comfy-sim-{}", std::process::id())));
    let mut models: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for model in &args.models {
        let Some((folder, name)) = model.split_once('/') else {
            return Err(format!("`--model {model}` is not `FOLDER/NAME`"));
        };
        models
            .entry(folder.to_owned())
            .or_default()
            .push(name.to_owned());
    }
    let mut config = Config::new(catalogue, root);
    config.port = args.port;
    config.models = models;
    config.memory = memory;
    config.protocol = match args.protocol {
        ProtocolArg::Recorded => Protocol::Recorded,
        ProtocolArg::Y2026 => Protocol::Y2026,
    };
    // Nobody can read a separate process's timeline: keeping it would only grow memory.
    config.record_timeline = false;
    config.timing = Timing {
        node_ms: args.node_ms,
        model_load_ms: args.model_load_ms,
        ..Timing::default()
    };
    Ok(config)
}

/// Colours only on a terminal, and not when `NO_COLOR` is set (<https://no-color.org>).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .init();
    let config = match config(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let root = config.root.clone();
        let sim = match comfy_sim::start(config).await {
            Ok(sim) => sim,
            Err(e) => {
                eprintln!("error: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("{}", sim.url());
        tracing::info!(root = %root.display(), "serving; Ctrl-C stops");
        let _ = tokio::signal::ctrl_c().await;
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}
