//! `comfy-sim`: runs the simulator as a process, for benchmarks and manual poking.
//!
//! Parses arguments, starts the library's server, prints its URL and runs until Ctrl-C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use comfy_sim::{Config, Timing};

/// A ComfyUI 0.3.64 protocol simulator.
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
    /// A model the server has, as `FOLDER/NAME` (`checkpoints/sd15.safetensors`); repeatable.
    #[arg(long = "model", value_name = "FOLDER/NAME")]
    models: Vec<String>,
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
    config.timing = Timing {
        node_ms: args.node_ms,
        model_load_ms: args.model_load_ms,
        ..Timing::default()
    };
    Ok(config)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
